"""Embeddings and rerank: a local sentence-embedding model served through llama.cpp."""
