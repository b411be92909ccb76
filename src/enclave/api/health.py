"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from enclave.api.state import StateDep

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    """Return 200 while the process can serve; 503 once an engine has failed."""
    failures = {
        model_id: engine.failure
        for model_id, engine in state.pool.loaded().items()
        if engine.failure is not None
    }
    if failures:
        return JSONResponse({"status": "failed", "engines": failures}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    """Return 200 once the default model is loaded, with the slot and queue state of each.

    Returns 503 while loading, and once an engine has failed, so that a load balancer stops
    sending requests that the failed engine would reject.
    """
    loaded = state.pool.loaded()
    models: dict[str, Any] = {model_id: engine.stats() for model_id, engine in loaded.items()}
    status = "ready" if state.ready else "loading"
    if any(engine.failure is not None for engine in loaded.values()):
        status = "failed"
    body = {"status": status, "models": models}
    return JSONResponse(body, status_code=200 if status == "ready" else 503)
