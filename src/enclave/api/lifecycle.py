"""The life of one API request, as seen by the subsystems that watch it.

Every HTTP request gets a ``RequestRecord`` from ``RequestContextMiddleware``. Route handlers
fill it in as they learn things (the model, the principal, token counts). They await
``accept()`` once the body is valid and the model id is known, before the model is loaded or
generation starts. The middleware calls ``request_finished`` on every observer after the last
byte of the response (streams included) has been sent, or the client has gone.

Observers (access control, privacy, audit trail, metrics) register on ``AppState.observers``
and are called in that list's order. Either method may be a plain function or a coroutine
function; coroutines are awaited, so an observer can wait for I/O (the audit trail waits for
its commit) without blocking the event loop. An observer's ``request_accepted`` may raise a
``RequestError`` to stop the request before generation: access control does this for a model
outside the key's scope, and the audit trail when it cannot write and fails closed.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from enclave.engine.types import Finished
from enclave.errors import RequestError

logger = logging.getLogger(__name__)


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
    accepted_at: float | None = None
    # The query (newest user message, prompt or inputs) after the privacy mode: redacted in
    # the redact-logs and redact-input modes. The audit trail stores an excerpt of it.
    # Observers must not log it. It is dropped when the request ends.
    input_text: str | None = None
    # Generated text, kept only while the privacy layer needs it to count personal data in
    # the response, else None. It is dropped when the request ends.
    output_parts: list[str] | None = None
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
        """Note that text of ``tokens`` tokens reached the client.

        Records the time to first token, and one inter-token gap per token: text that
        arrives several tokens at once spreads the time since the last output over them.
        """
        now = time.perf_counter()
        first = self.first_token_at is None
        if first:
            self.first_token_at = now
            tokens -= 1
        if tokens > 0 and self.last_token_at is not None:
            gap = (now - self.last_token_at) / tokens
            self.token_gaps_s.extend([gap] * tokens)
        if first or tokens > 0:
            self.last_token_at = now
        self.output_chars += len(text)
        if self.output_parts is not None:
            self.output_parts.append(text)

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


class RequestObserver(Protocol):
    """A subsystem that watches requests.

    Both methods may return an awaitable (be ``async def``). Neither may block the event
    loop: a synchronous method must be fast, and waiting belongs in a coroutine.
    """

    def request_accepted(self, record: RequestRecord) -> Awaitable[None] | None:
        """Called before generation starts; may raise a RequestError to reject the request."""

    def request_finished(self, record: RequestRecord) -> Awaitable[None] | None:
        """Called once after the response ended, whatever the outcome. Should not raise,
        because the middleware only logs the exception and goes on to the next observer."""


def record_of(request: Request) -> RequestRecord:
    """Return the record the middleware attached to this request."""
    record: RequestRecord = request.scope["state"]["enclave_record"]
    return record


async def accept(request: Request, *, model: str, input_text: str | None = None,
                 stream: bool = False) -> RequestRecord:
    """Mark the request accepted and tell every observer; observers may reject it.

    Routes call this after validating the body and looking up the model id, and before
    loading the model, so a key outside the model's scope cannot make the server load it.
    A rejection's error code goes on the record before the error propagates.
    """
    record = record_of(request)
    record.model = model
    record.input_text = input_text
    record.stream = stream
    record.accepted = True
    record.accepted_at = time.perf_counter()
    try:
        for observer in request.app.state.enclave.observers:
            outcome = observer.request_accepted(record)
            if inspect.isawaitable(outcome):
                await outcome
    except RequestError as error:
        note_error(request, error)
        raise
    return record


def note_error(request: Request, error: RequestError) -> None:
    """Put the code of the error a request failed with on its record, unless one is there."""
    record = request.scope.get("state", {}).get("enclave_record")
    if isinstance(record, RequestRecord) and record.error_code is None:
        record.error_code = error.code or error.error_type


async def notify_finished(observers: Iterable[Any], record: RequestRecord) -> None:
    """Call ``request_finished`` on every observer in order; log a failing one and go on."""
    for observer in observers:
        try:
            outcome = observer.request_finished(record)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception("Observer %s failed on request_finished", type(observer).__name__)


def note_finished(record: RequestRecord, finished: Finished) -> None:
    """Copy a generation's outcome into the request record for the observers."""
    record.prompt_tokens = finished.prompt_tokens
    record.completion_tokens = finished.completion_tokens
    record.cached_tokens = finished.timings.cached_tokens
    record.queue_s = finished.timings.queue_ms / 1000.0
    record.finish_reason = finished.reason
    if finished.error is not None:
        record.error_code = finished.error.code or finished.error.error_type
