"""Routes of the Ollama-compatible API. Each route parses, calls a service, returns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.responses import Response

from enclave.api.errors import parse_body
from enclave.api.ollama import embed as embed_service
from enclave.api.ollama import generation
from enclave.api.ollama import models as descriptions
from enclave.api.ollama.protocol import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    ShowBody,
)
from enclave.api.state import AppState, StateDep
from enclave.errors import UnsupportedRouteError
from enclave.models.registry import ModelEntry

router = APIRouter()

# The Ollama release whose API this server matches: clients compare it to decide which
# features they may use (structured outputs 0.5, "think" 0.9).
OLLAMA_API_VERSION = "0.9.0"
# Ollama ids carry a tag; "model" and "model:latest" name the same model here.
_DEFAULT_TAG = ":latest"


def resolve(state: AppState, model: str) -> ModelEntry:
    """Return the registry entry of a model id, ignoring a ":latest" tag."""
    return state.pool.registry.get(model.removesuffix(_DEFAULT_TAG))


@router.get("/", include_in_schema=False)
async def root() -> PlainTextResponse:
    # Ollama clients probe the server with GET (or HEAD) / and check for this text.
    return PlainTextResponse("Ollama is running")


@router.head("/", include_in_schema=False)
async def root_head() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION}


@router.get("/api/tags")
async def tags(state: StateDep) -> dict[str, Any]:
    loaded = state.pool.loaded()
    settings = state.settings.engine
    models = []
    for entry in state.pool.entries():
        facts = await descriptions.model_facts(entry, loaded.get(entry.id), settings)
        models.append(descriptions.tag_entry(facts, settings))
    return {"models": models}


@router.post("/api/show")
async def show(request: Request, state: StateDep) -> dict[str, Any]:
    body = await parse_body(request, ShowBody)
    entry = resolve(state, body.model_id())
    settings = state.settings.engine
    facts = await descriptions.model_facts(entry, state.pool.loaded().get(entry.id), settings)
    return descriptions.show(facts, settings, settings.reasoning_for(entry.id))


@router.get("/api/ps")
async def running(state: StateDep) -> dict[str, Any]:
    settings = state.settings.engine
    models = []
    for model_id, engine in state.pool.loaded().items():
        entry = state.pool.registry.get(model_id)
        facts = await descriptions.model_facts(entry, engine, settings)
        models.append(descriptions.running_entry(facts, settings))
    return {"models": models}


@router.post("/api/chat")
async def chat(request: Request, state: StateDep) -> Response:
    body = await parse_body(request, ChatBody)
    body.model = resolve(state, body.model).id
    return await generation.chat(request, body, state)


@router.post("/api/generate")
async def generate(request: Request, state: StateDep) -> Response:
    body = await parse_body(request, GenerateBody)
    body.model = resolve(state, body.model).id
    return await generation.generate(request, body, state)


@router.post("/api/embed")
async def embed(request: Request, state: StateDep) -> dict[str, Any]:
    body = await parse_body(request, EmbedBody)
    body.model = body.model.removesuffix(_DEFAULT_TAG)
    return await embed_service.embed(request, body, state)


@router.post("/api/embeddings")
async def embeddings(request: Request, state: StateDep) -> dict[str, Any]:
    body = await parse_body(request, EmbeddingsBody)
    body.model = body.model.removesuffix(_DEFAULT_TAG)
    return await embed_service.embeddings(request, body, state)


# Ollama's routes that download, upload, create or delete models. Enclave never fetches or
# writes model files over the API: an operator copies GGUF files into engine.models_dir,
# which is listed again on every lookup.
_MODEL_MANAGEMENT_ROUTES = (
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/create"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("HEAD", "/api/blobs/{digest}"),
    ("POST", "/api/blobs/{digest}"),
)


async def model_management(request: Request) -> None:
    raise UnsupportedRouteError(
        f"{request.method} {request.url.path} is not available: Enclave never downloads or "
        "changes models over the API. Copy a GGUF file into the folder set by "
        "engine.models_dir on the server; it is listed at once.",
        code="model_management_disabled",
    )


for _method, _path in _MODEL_MANAGEMENT_ROUTES:
    router.add_api_route(_path, model_management, methods=[_method], include_in_schema=False)
