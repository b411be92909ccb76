"""Build the FastAPI application: state, middleware, error handlers and routers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from enclave import __version__
from enclave.access.control import AccessControl
from enclave.access.middleware import AccessMiddleware
from enclave.access.observer import AccessObserver
from enclave.api import health, rerank
from enclave.api.admin import router as admin_router
from enclave.api.audit_observer import AuditObserver
from enclave.api.body_limit import BodyLimitMiddleware
from enclave.api.errors import install_error_handlers
from enclave.api.middleware import RequestContextMiddleware
from enclave.api.ollama import router as ollama_router
from enclave.api.openai import embeddings as openai_embeddings
from enclave.api.openai import router as openai_router
from enclave.api.privacy import PrivacyLayer
from enclave.api.state import AppState
from enclave.audit import AuditTrail
from enclave.config import Settings
from enclave.embeddings.service import create_embedding_service
from enclave.engine.pool import EnginePool
from enclave.metrics.setup import install_metrics
from enclave.models.registry import ModelRegistry

logger = logging.getLogger(__name__)


def create_app(settings: Settings, pool: EnginePool | None = None) -> FastAPI:
    """Return the ASGI app; the default model is loaded by the lifespan, before serving."""
    pool = pool or EnginePool(settings.engine, ModelRegistry(settings.engine))
    state = AppState(settings=settings, pool=pool, privacy=PrivacyLayer(settings.privacy),
                     embeddings=create_embedding_service(settings.embeddings, settings.data_dir))
    if state.embeddings:
        state.stats_providers["embeddings"] = state.embeddings
    access = state.access = AccessControl.from_settings(settings)
    access_observer = AccessObserver(access)
    # First, so a model outside the key's scope is rejected before other observers record it.
    state.observers.insert(0, access_observer)
    # Before the audit observer: it counts the personal data in a response for the close
    # record.
    state.observers.append(state.privacy)
    state.stats_providers["privacy"] = state.privacy
    if settings.audit.enabled:
        state.audit = AuditTrail(settings.audit, settings.data_dir)
        state.stats_providers["audit"] = state.audit

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.started_at = time.time()
        if state.embeddings:
            state.embeddings.start()  # loads while the chat model loads
        await pool.start()
        if state.embeddings:
            await state.embeddings.wait_loaded()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await pool.close()
            if state.embeddings:
                await state.embeddings.close()
            await access_observer.drain()
            await access.close()
            if state.audit:
                # close() commits what is queued and signs a last checkpoint. It blocks, so it
                # runs in a thread.
                await asyncio.to_thread(state.audit.close)

    app = FastAPI(title="Enclave", version=__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.enclave = state

    install_error_handlers(app)
    # Added before CORS, so it runs inside it: CORS preflights pass without a key.
    app.add_middleware(AccessMiddleware, access=state.access)
    # Outside access control, which reads the body of /api/show to find the model.
    app.add_middleware(BodyLimitMiddleware,
                       limit_bytes=int(settings.server.max_body_mb * 1_000_000))
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
    app.include_router(admin_router.router)
    install_metrics(app, state)
    if state.audit:
        # Last, so that waiting for its commits delays no other observer.
        state.observers.append(AuditObserver(state.audit, str(settings.privacy.mode)))
    app.include_router(openai_embeddings.router)
    app.include_router(rerank.router)
    app.include_router(ollama_router.router)
    return app
