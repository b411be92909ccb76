"""Routes of the OpenAI-compatible API. Each route parses, calls a service, returns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from enclave.api.errors import parse_body
from enclave.api.openai.chat import create_chat_completion
from enclave.api.openai.completions import create_completion
from enclave.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from enclave.api.state import StateDep

router = APIRouter(prefix="/v1")


def _model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "enclave"}


@router.get("/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    loaded = state.pool.loaded()
    data = []
    for entry in state.pool.entries():
        engine = loaded.get(entry.id)
        created = engine.info.created if engine else int(entry.path.stat().st_mtime)
        data.append(_model_object(entry.id, created))
    if state.embeddings:
        data.extend(_model_object(model_id, state.embeddings.created)
                    for model_id in state.embeddings.model_ids())
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, state: StateDep) -> dict[str, Any]:
    if state.embeddings and model_id in state.embeddings.model_ids():
        return _model_object(model_id, state.embeddings.created)
    entry = state.pool.registry.get(model_id)
    return _model_object(entry.id, int(entry.path.stat().st_mtime))


@router.post("/chat/completions")
async def chat_completions(request: Request, state: StateDep) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    return await create_chat_completion(request, body, state)


@router.post("/completions")
async def completions(request: Request, state: StateDep) -> Response:
    body = await parse_body(request, CompletionRequest)
    return await create_completion(request, body, state)
