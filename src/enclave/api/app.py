"""Build the FastAPI application: state, middleware, error handlers and routers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from enclave import __version__
from enclave.api import health
from enclave.api.errors import install_error_handlers
from enclave.api.middleware import RequestContextMiddleware
from enclave.api.openai import router as openai_router
from enclave.api.state import AppState
from enclave.config import Settings
from enclave.engine.pool import EnginePool
from enclave.models.registry import ModelRegistry

logger = logging.getLogger(__name__)


def create_app(settings: Settings, pool: EnginePool | None = None) -> FastAPI:
    """Return the ASGI app; the default model is loaded by the lifespan, before serving."""
    pool = pool or EnginePool(settings.engine, ModelRegistry(settings.engine))
    state = AppState(settings=settings, pool=pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.started_at = time.time()
        await pool.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await pool.close()

    app = FastAPI(title="Enclave", version=__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.enclave = state

    install_error_handlers(app)
    if settings.server.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, observers=state.observers)

    app.include_router(health.router)
    app.include_router(openai_router.router)
    return app
