"""What the HTTP layer shares across requests, attached to ``app.state.enclave``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from enclave.config import Settings
from enclave.engine.pool import EnginePool


@dataclass
class AppState:
    settings: Settings
    pool: EnginePool
    ready: bool = False
    started_at: float = field(default=0.0)
    base_url: str = ""
    # RequestObserver instances (audit, metrics, rate limits); see api/lifecycle.py.
    observers: list[Any] = field(default_factory=list)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.enclave
    return state


StateDep = Annotated[AppState, Depends(get_state)]
