"""The life of one API request, as seen by the subsystems that watch it.

Every HTTP request gets a ``RequestRecord`` from ``RequestContextMiddleware``. Route handlers
fill it in as they learn things (the model, the principal, token counts) and call
``accept()`` once the request has passed validation and is about to reach the model; the
middleware calls ``request_finished`` on every observer after the last byte of the response
(streams included) has been sent, or the client has gone.

Observers (audit trail, metrics, rate limits) register on ``AppState.observers``. An
observer's ``request_accepted`` may raise a ``RequestError`` to stop the request before
generation (the audit trail does this when it cannot write and fails closed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from enclave.engine.types import Finished


@dataclass(slots=True)
class RequestRecord:
    """What is known about one request; filled in as the request progresses."""

    request_id: str
    method: str
    route: str
    client: str | None
    started: float = field(default_factory=time.perf_counter)
    protocol: str = "http"
    model: str | None = None
    # Set by the access layer: an object with user_id and key_prefix attributes.
    principal: Any = None
    accepted: bool = False
    # Text of the request as the model would see it, for audit excerpts and PII scanning.
    # Observers must not log it; it is dropped when the request ends.
    input_text: str | None = None
    stream: bool = False
    status: int = 0
    error_code: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    output_chars: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    token_gaps_s: list[float] = field(default_factory=list)
    queue_s: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def mark_output(self, text: str, tokens: int = 1) -> None:
        """Note that text reached the client; records time to first token and gaps."""
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        elif self.last_token_at is not None and tokens:
            self.token_gaps_s.append(now - self.last_token_at)
        if tokens:
            self.last_token_at = now
        self.output_chars += len(text)

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


class RequestObserver(Protocol):
    """A subsystem that watches requests. Both methods must be fast and must not block."""

    def request_accepted(self, record: RequestRecord) -> None:
        """Called before generation starts; may raise a RequestError to reject the request."""

    def request_finished(self, record: RequestRecord) -> None:
        """Called once after the response ended, whatever the outcome. Must not raise."""


def record_of(request: Request) -> RequestRecord:
    """Return the record the middleware attached to this request."""
    record: RequestRecord = request.scope["state"]["enclave_record"]
    return record


def accept(request: Request, *, model: str, input_text: str | None = None,
           stream: bool = False) -> RequestRecord:
    """Mark the request accepted and tell every observer; observers may reject it."""
    record = record_of(request)
    record.model = model
    record.input_text = input_text
    record.stream = stream
    record.accepted = True
    for observer in request.app.state.enclave.observers:
        observer.request_accepted(record)
    return record


def note_finished(record: RequestRecord, finished: Finished) -> None:
    """Copy a generation's outcome into the request record for the observers."""
    record.prompt_tokens = finished.prompt_tokens
    record.completion_tokens = finished.completion_tokens
    record.cached_tokens = finished.timings.cached_tokens
    record.queue_s = finished.timings.queue_ms / 1000.0
    record.finish_reason = finished.reason
    if finished.error is not None:
        record.error_code = finished.error.code or finished.error.error_type
