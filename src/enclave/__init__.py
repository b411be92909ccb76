"""Enclave: run language models on your own hardware behind OpenAI- and Ollama-compatible APIs."""

__version__ = "0.1.0"
