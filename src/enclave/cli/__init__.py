"""The enclave command line: one module per command group."""
