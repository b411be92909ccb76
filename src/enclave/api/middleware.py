"""ASGI middleware: a request id for every request, and one log line when it ends."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.api.lifecycle import RequestRecord
from enclave.logs import request_id_var

logger = logging.getLogger("enclave.access")

REQUEST_ID_HEADER = b"x-request-id"
# A client-supplied id is kept only if it is short and plain, so it cannot forge log lines.
_ACCEPTED_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                record.status = status
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if status == 0:
                record.status = 499  # the client went away before a response started
            self._notify(record)
            logger.info(
                "%s %s %d %.1f ms", scope["method"], scope["path"], status,
                (time.perf_counter() - started) * 1000.0,
                extra={"method": scope["method"], "path": scope["path"], "status": status,
                       "duration_ms": round((time.perf_counter() - started) * 1000.0, 3)},
            )
            request_id_var.reset(token)

    def _notify(self, record: RequestRecord) -> None:
        for observer in self.observers:
            try:
                observer.request_finished(record)
            except Exception:
                logger.exception("Observer %s failed on request_finished",
                                 type(observer).__name__)
        record.input_text = None

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == REQUEST_ID_HEADER and _ACCEPTED_ID.match(value):
                return bytes(value).decode()
        return f"req-{secrets.token_hex(8)}"
