"""POST /api/embed and the older POST /api/embeddings, on Enclave's embedding service.

``/api/embed`` takes a string or a list of strings and returns ``embeddings``, one list per
input, with ``prompt_eval_count``. ``/api/embeddings`` takes one ``prompt`` and returns one
``embedding``. Both return the L2-normalised vectors of the embedding model.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from enclave.api.lifecycle import accept, record_of
from enclave.api.ollama.protocol import EmbedBody, EmbeddingsBody
from enclave.api.openai.embeddings import check_dimensions, check_model, embedding_service
from enclave.api.state import AppState
from enclave.errors import InvalidRequestError


def embed_inputs(value: Any) -> list[str]:
    """Return ``input`` as a list of non-empty strings; raise a 400 error naming the bad one."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InvalidRequestError("'input' must be a string or a non-empty list of strings.",
                                  param="input")
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise InvalidRequestError(f"'input[{index}]' must be a non-empty string.",
                                      param=f"input[{index}]")
    return items


async def embed(request: Request, body: EmbedBody, state: AppState) -> dict[str, Any]:
    started = time.perf_counter()
    body.log_ignored_fields("Ollama embed request")
    service = embedding_service(state)
    check_model(state, body.model, (service.model_id,))
    texts = embed_inputs(body.input)
    service.check_count(len(texts))
    await check_dimensions(service, body.dimensions)
    logged = state.privacy.protect_embedding_inputs(record_of(request), texts)
    record = await accept(request, model=body.model, input_text="\n".join(logged))

    result = await service.embed(texts, truncate=body.truncate)
    record.prompt_tokens = result.prompt_tokens
    return {
        "model": body.model,
        "embeddings": result.vectors,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": result.prompt_tokens,
    }


async def embeddings(request: Request, body: EmbeddingsBody, state: AppState) -> dict[str, Any]:
    body.log_ignored_fields("Ollama embeddings request")
    service = embedding_service(state)
    check_model(state, body.model, (service.model_id,))
    if not body.prompt:
        raise InvalidRequestError("'prompt' must be a non-empty string.", param="prompt")
    logged = state.privacy.protect_embedding_inputs(record_of(request), [body.prompt])
    record = await accept(request, model=body.model, input_text=logged[0])

    result = await service.embed([body.prompt])
    record.prompt_tokens = result.prompt_tokens
    return {"embedding": result.vectors[0]}
