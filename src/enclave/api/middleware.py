"""ASGI middleware: a request id for every request, and one log line when it ends."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.access.keys import parse_key
from enclave.access.middleware import presented_key
from enclave.api.lifecycle import RequestRecord, notify_finished
from enclave.logs import request_id_var

logger = logging.getLogger("enclave.access")

REQUEST_ID_HEADER = b"x-request-id"
# Fields of a generation request that the text log format appends to the access line; the
# JSON format writes every field of access_log_fields().
_TEXT_FIELDS = ("model", "user_id", "ttft_ms", "tokens_per_s", "queue_ms", "completion_tokens")
# A client-supplied id is kept only if it is short and plain, so it cannot forge log lines.
_ACCEPTED_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
# Statuses of requests that access control turned away. When the principal was never set,
# their record names the public prefix of the key presented.
REJECTED_STATUSES = frozenset({401, 403, 429})
# Error bodies are small, so a larger body is not read for its error code.
_MAX_ERROR_BODY_BYTES = 65536


class RequestContextMiddleware:
    """Assign X-Request-Id, attach a RequestRecord, log the outcome and tell observers."""

    def __init__(self, app: ASGIApp, observers: list[Any]) -> None:
        self.app = app
        self.observers = observers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = self._request_id(scope)
        token = request_id_var.set(request_id)
        client = scope.get("client")
        record = RequestRecord(
            request_id=request_id,
            method=scope["method"],
            route=scope["path"],
            client=client[0] if client else None,
        )
        scope.setdefault("state", {})["enclave_record"] = record
        started = time.perf_counter()
        status = 0
        error_body_pending = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, error_body_pending
            if message["type"] == "http.response.start":
                status = message["status"]
                record.status = status
                error_body_pending = status >= 400
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and error_body_pending:
                error_body_pending = False
                if record.error_code is None and not message.get("more_body"):
                    record.error_code = error_code_of(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if status == 0:
                record.status = 499  # the client went away before a response started
            record.attributes["route_template"] = _route_template(scope)
            if record.principal is None and record.status in REJECTED_STATUSES:
                record.attributes["key_prefix"] = _presented_prefix(scope)
            duration_ms = (time.perf_counter() - started) * 1000.0
            fields = access_log_fields(record)
            summary = "".join(f" {key}={fields[key]}" for key in _TEXT_FIELDS if key in fields)
            logger.info(
                "%s %s %d %.1f ms%s", scope["method"], scope["path"], status, duration_ms,
                summary,
                extra={"method": scope["method"], "path": scope["path"], "status": status,
                       "duration_ms": round(duration_ms, 3), **fields},
            )
            # After the log line, which should not wait for the audit trail's commit.
            await self._notify(record)
            request_id_var.reset(token)

    async def _notify(self, record: RequestRecord) -> None:
        await notify_finished(self.observers, record)
        record.input_text = None
        record.output_parts = None

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == REQUEST_ID_HEADER and _ACCEPTED_ID.match(value):
                return bytes(value).decode()
        return f"req-{secrets.token_hex(8)}"


def error_code_of(body: bytes) -> str | None:
    """Return the ``code`` (else the ``type``) of an OpenAI-shaped JSON error body.

    The error handlers put the code on the record themselves; this covers the rejections
    that the access middleware sends before the app runs.

    NOTE: Ollama's error body is ``{"error": "message"}`` without a code, so an Ollama
    request rejected by the access middleware (no key, a rate limit) gets no error code.
    """
    if len(body) > _MAX_ERROR_BODY_BYTES:
        return None
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("type")
    return code if isinstance(code, str) else None


def _presented_prefix(scope: Scope) -> str | None:
    """Return the public prefix of the Enclave key a request presented, never its secret."""
    key = presented_key(scope)
    parsed = parse_key(key) if key else None
    return parsed.prefix if parsed else None


def _route_template(scope: Scope) -> str | None:
    """Return the matched route's path template (``/v1/models/{model_id:path}``), if any."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def access_log_fields(record: RequestRecord) -> dict[str, Any]:
    """Return the access-log fields of a request: who, which model, timings, outcome.

    Counts and timings only: neither prompt nor answer text appears here.
    """
    fields: dict[str, Any] = {}
    principal = record.principal
    for name in ("user_id", "key_prefix"):
        value = getattr(principal, name, None)
        if value is not None:
            fields[name] = value
    if principal is None and record.attributes.get("key_prefix"):
        fields["key_prefix"] = record.attributes["key_prefix"]
    if record.error_code is not None:
        fields["error_code"] = record.error_code
    if not record.accepted:
        return fields

    fields["model"] = record.model
    fields["stream"] = record.stream
    fields["prompt_tokens"] = record.prompt_tokens
    fields["cached_tokens"] = record.cached_tokens
    fields["completion_tokens"] = record.completion_tokens
    if record.queue_s is not None:
        fields["queue_ms"] = round(record.queue_s * 1000.0, 1)
    ttft = record.time_to_first_token_s
    if ttft is not None:
        fields["ttft_ms"] = round(ttft * 1000.0, 1)
    if record.first_token_at is not None and record.last_token_at is not None:
        decode_s = record.last_token_at - record.first_token_at
        # The first token ends prefill, so decoding produced the others.
        if decode_s > 0 and record.completion_tokens > 1:
            fields["tokens_per_s"] = round((record.completion_tokens - 1) / decode_s, 1)
    if record.finish_reason is not None:
        fields["finish_reason"] = record.finish_reason
    return fields
