"""GET /metrics in the Prometheus text format, or OpenMetrics when the Accept header requests it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response

from enclave.access.middleware import presented_key
from enclave.api.lifecycle import record_of
from enclave.api.state import AppState, StateDep


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """Return a router that serves ``registry`` at /metrics."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request, state: StateDep) -> Response:
        if state.settings.metrics.require_key:
            await _authenticate_admin(request, state)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        # Collectors call into llama.cpp and NVML; keep that off the event loop.
        body = await asyncio.to_thread(encoder, registry)
        return Response(body, media_type=content_type)

    return router


async def _authenticate_admin(request: Request, state: AppState) -> None:
    """Raise a 401 or 403 RequestError unless the request carries an active admin key."""
    # The access middleware lets /metrics through, so the key is checked here.
    assert state.access is not None, "create_app sets AppState.access before serving"
    principal = await state.access.authenticate(presented_key(request.scope), admin=True)
    record_of(request).principal = principal
