"""ASGI middleware that rejects a request body over server.max_body_mb with 413.

A declared Content-Length over the limit is rejected before any byte is read. A body sent
without one (chunked) is counted as it arrives and rejected at the first chunk that crosses
the limit, so an oversized body is never held in memory in full.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.api.errors import request_error_response
from enclave.errors import PayloadTooLargeError


class BodyLimitMiddleware:
    """Middleware that rejects a body over ``limit_bytes`` with 413 in the protocol's shape."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        if self._declared_length(scope) > self.limit_bytes:
            await self._reject(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise PayloadTooLargeError(self.limit_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except PayloadTooLargeError:
            # Raised where no route catches it, such as inside the access middleware.
            if response_started:
                raise
            await self._reject(scope, receive, send)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0  # the HTTP server rejects a malformed length itself
        return 0

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = request_error_response(PayloadTooLargeError(self.limit_bytes), scope["path"])
        await response(scope, receive, send)
