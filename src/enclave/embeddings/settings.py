"""Settings of the embeddings and rerank endpoints (section ``[embeddings]``)."""

from __future__ import annotations

from pydantic import Field

from enclave.section import Section


class EmbeddingsSettings(Section):
    enabled: bool = Field(True, description="Serve /v1/embeddings and /v1/rerank.")
    model: str | None = Field(
        None,
        description="GGUF embedding model, or a Hugging Face BERT sentence-embedding folder "
        "(converted to GGUF once and cached under data_dir). Default: the embedded "
        "all-MiniLM-L6-v2.",
    )
    max_inputs: int = Field(2048, ge=1, description="Maximum texts in one embeddings request, "
                            "or documents in one rerank request.")
    max_input_tokens: int = Field(
        8192, ge=1, description="Maximum tokens of one input; longer inputs are rejected with "
        "400. Inputs longer than the model's sequence limit but within this maximum are "
        "truncated to the model's limit.",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for the embedding model. Default 1: with more, "
        "llama.cpp's OpenMP workers for embeddings and for the chat model together outnumber "
        "the cores, and OpenMP then sleeps at every barrier, slowing chat decoding by about a "
        "third on a 2-core machine (docs/embeddings.md).")
    batch_tokens: int = Field(
        512, ge=64, description="Maximum tokens encoded in one llama.cpp call, rounded up to a "
        "multiple of 64; several inputs share a call up to this size. The attention memory "
        "grows with its square.",
    )
