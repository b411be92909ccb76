"""The Ollama-compatible API under ``/api``, for clients that speak Ollama's protocol.

Field names and shapes follow Ollama's API reference (docs/api.md in the ollama/ollama
repository); docs/clients.md lists what Enclave implements and where it differs.
"""
