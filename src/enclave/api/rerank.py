"""``POST /v1/rerank`` (and ``/rerank``) in the shape Jina and Cohere define, which knowledge-base
clients such as Cherry Studio send.

No cross-encoder ships with Enclave, so documents are ranked by the cosine similarity of their
embedding vectors to the query's, mapped to [0, 1]. The rerank model id names the embedding
model it runs on (``all-MiniLM-L6-v2-cosine-rerank``), and the embedding model id is accepted
as well.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from enclave.api.errors import parse_body
from enclave.api.lifecycle import accept, record_of
from enclave.api.openai.embeddings import check_model, embedding_service
from enclave.api.openai.protocol import Lenient
from enclave.api.state import StateDep
from enclave.errors import InvalidRequestError

# NOTE: llama.cpp can run cross-encoder rerankers (LLAMA_POOLING_TYPE_RANK), which rank far
# better than embedding similarity, but no cross-encoder is available offline to test that
# path, so it is not offered yet.

router = APIRouter()


class RerankRequest(Lenient):
    model: str | None = None
    query: str = Field(min_length=1)
    # Checked by document_texts(), which names the bad element better than a pydantic union.
    documents: list[Any] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True

    def document_texts(self) -> list[str]:
        """Return each document's text; raise a 400 error naming a malformed document."""
        texts = []
        for index, item in enumerate(self.documents):
            text = item.get("text") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise InvalidRequestError(
                    f"'documents[{index}]' must be a string or an object with a 'text' string.",
                    param=f"documents[{index}]",
                    code="invalid_value",
                )
            texts.append(text)
        return texts


@router.post("/v1/rerank")
@router.post("/rerank")
async def rerank(request: Request, state: StateDep) -> JSONResponse:
    body = await parse_body(request, RerankRequest)
    body.log_ignored_fields("rerank request")
    service = embedding_service(state)
    model = body.model or service.rerank_model_id
    check_model(state, model, (service.rerank_model_id, service.model_id))
    texts = body.document_texts()
    service.check_count(len(texts), "documents")
    logged = state.privacy.protect_embedding_inputs(record_of(request), [body.query, *texts])
    record = await accept(request, model=model, input_text="\n".join(logged))

    result = await service.rerank(body.query, texts)
    record.prompt_tokens = result.prompt_tokens
    ranked = sorted(range(len(texts)), key=lambda index: (-result.scores[index], index))
    results: list[dict[str, Any]] = []
    for index in ranked[: body.top_n]:
        item: dict[str, Any] = {"index": index, "relevance_score": result.scores[index]}
        if body.return_documents:
            item["document"] = {"text": texts[index]}
        results.append(item)
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return JSONResponse({"id": f"rerank-{secrets.token_hex(12)}", "model": model,
                         "results": results, "usage": usage})
