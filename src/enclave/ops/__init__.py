"""Operational tools for the people who run Enclave."""
