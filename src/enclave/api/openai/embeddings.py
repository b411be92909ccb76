"""``POST /v1/embeddings`` in the shape of OpenAI's embeddings API.

``input`` is a string or a list of strings. Lists of token ids, which OpenAI also accepts,
are rejected: they are ids of OpenAI's tiktoken vocabulary (LangChain sends them by default),
and read as ids of the served model's vocabulary they would give meaningless vectors.
Empty strings are rejected as OpenAI does. ``encoding_format: base64`` returns each vector
as little-endian float32 bytes, which the OpenAI SDKs decode.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from enclave.api.errors import parse_body
from enclave.api.lifecycle import accept, record_of
from enclave.api.openai.protocol import Lenient
from enclave.api.state import AppState, StateDep
from enclave.embeddings.service import EmbeddingService
from enclave.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    RequestError,
    UnsupportedParameterError,
)

router = APIRouter(prefix="/v1")


class EmbeddingRequest(Lenient):
    # Checked by input_texts() instead of pydantic, whose messages for a failed union of
    # list types name every member and confuse more than they help.
    input: Any
    model: str = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingsDisabledError(RequestError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self) -> None:
        super().__init__(
            "Embeddings are disabled on this server (embeddings.enabled = false). Ask the "
            "operator to enable them.",
            code="embeddings_disabled",
        )


def embedding_service(state: AppState) -> EmbeddingService:
    """Return the embedding service; raise a 404 error when embeddings are disabled."""
    if state.embeddings is None:
        raise EmbeddingsDisabledError()
    return state.embeddings


def check_model(state: AppState, model: str, accepted: tuple[str, ...]) -> None:
    """Reject a chat model id with 400 and an unknown id with 404, naming the right id."""
    if model in accepted:
        return
    chat_models = [entry.id for entry in state.pool.entries()]
    if model in chat_models:
        raise InvalidRequestError(
            f"'{model}' is a chat model and cannot compute embeddings. Use the embedding "
            f"model '{accepted[0]}'.",
            param="model",
            code="model_not_embedding",
        )
    raise ModelNotFoundError(model, list(accepted))


def input_texts(value: Any) -> list[str]:
    """Return the inputs as a list of strings; raise a 400 error naming the bad element."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"'input' must be a string or a list of strings, not {_json_type(value)}.",
            param="input",
            code="invalid_value",
        )
    if not value:
        raise InvalidRequestError("'input' must not be an empty list; send at least one text.",
                                  param="input", code="invalid_value")
    if _is_token_ids(value) or all(_is_token_ids(item) for item in value):
        raise UnsupportedParameterError(
            "input",
            "'input' as token ids is not supported, because the ids of another tokenizer would "
            "give meaningless vectors. Send the texts as strings (in LangChain, set "
            "check_embedding_ctx_length=False).",
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"'input[{index}]' must be a string, not {_json_type(item)}.",
                param=f"input[{index}]",
                code="invalid_value",
            )
        if not item:
            raise InvalidRequestError(
                f"'input[{index}]' is an empty string; every input must contain text.",
                param=f"input[{index}]",
                code="invalid_value",
            )
    return value


def _is_token_ids(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(
        isinstance(token, int) and not isinstance(token, bool) for token in item
    )


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object",
             list: "a list", type(None): "null", str: "a string"}
    return names.get(type(value), type(value).__name__)


def encode_vector(vector: npt.NDArray[np.float32], encoding_format: str) -> list[float] | str:
    """Return a vector as JSON numbers, or as base64 of little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values


async def check_dimensions(service: EmbeddingService, requested: int | None) -> None:
    """Raise a 400 error unless ``requested`` is absent or the model's own dimensions."""
    if requested is None:
        return
    dimensions = (await service.model_info()).dimensions
    if requested != dimensions:
        raise UnsupportedParameterError(
            "dimensions",
            f"dimensions = {requested} is not supported: {service.model_id} returns vectors "
            f"of {dimensions} dimensions and cannot shorten them. Omit dimensions or send "
            f"{dimensions}.",
        )


@router.post("/embeddings")
async def create_embeddings(request: Request, state: StateDep) -> JSONResponse:
    body = await parse_body(request, EmbeddingRequest)
    body.log_ignored_fields("embeddings request")
    service = embedding_service(state)
    check_model(state, body.model, (service.model_id,))
    texts = input_texts(body.input)
    service.check_count(len(texts))
    await check_dimensions(service, body.dimensions)

    logged = state.privacy.protect_embedding_inputs(record_of(request), texts)
    record = await accept(request, model=service.model_id, input_text="\n".join(logged))
    result = await service.embed(texts)
    record.prompt_tokens = result.prompt_tokens
    data = [
        {"object": "embedding", "index": index,
         "embedding": encode_vector(vector, body.encoding_format)}
        for index, vector in enumerate(result.array)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    # JSONResponse directly: FastAPI's encoder would walk every float of every vector.
    return JSONResponse(
        {"object": "list", "data": data, "model": service.model_id, "usage": usage}
    )
