"""What the HTTP layer shares across requests, attached to ``app.state.enclave``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from enclave.access.control import AccessControl
from enclave.api.privacy import PrivacyLayer
from enclave.audit import AuditTrail
from enclave.config import Settings
from enclave.embeddings.service import EmbeddingService
from enclave.engine.pool import EnginePool


@dataclass
class AppState:
    settings: Settings
    pool: EnginePool
    # The [privacy] mode applied to every generation request; see api/privacy.py.
    privacy: PrivacyLayer
    ready: bool = False
    started_at: float = field(default=0.0)
    base_url: str = ""
    # RequestObserver instances (audit, metrics, rate limits); see api/lifecycle.py.
    observers: list[Any] = field(default_factory=list)
    # Subsystems whose stats() become metrics, by name; see enclave/metrics/subsystems.py.
    stats_providers: dict[str, Any] = field(default_factory=dict)
    # None when embeddings.enabled is false.
    embeddings: EmbeddingService | None = None
    # API keys and rate limits; set by create_app.
    access: AccessControl | None = None
    # None when audit.enabled is false. The lifespan closes it.
    audit: AuditTrail | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.enclave
    return state


StateDep = Annotated[AppState, Depends(get_state)]
