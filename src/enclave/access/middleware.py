"""Authentication of every API request, as a pure ASGI middleware.

Every path needs a key whenever ``AccessControl`` requires one, except the few in
``OPEN_PATHS``: the probes (``/health``, ``/ready``), ``/metrics`` (which checks an admin key
itself), the API docs and ``/``. Protecting by default means a route added later is covered
without anyone remembering to list it. The admin API (``/admin``) always needs an admin key.
A rejected request gets the error shape of its protocol: ``{"error": "message"}`` under
``/api`` (Ollama), ``{"error": {message, type, param, code}}`` everywhere else (OpenAI).

A key restricted to some models also gets restricted model listings: ``GET /v1/models``,
``GET /api/tags`` and ``GET /api/ps`` leave out the models it may not use, and
``GET /v1/models/{id}`` and ``POST /api/show`` respond with 403 for them. Generation routes check
the model when they call ``lifecycle.accept`` (see ``AccessObserver``).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.access.control import AccessControl
from enclave.access.keys import ALL_MODELS, Principal
from enclave.api.errors import error_body
from enclave.errors import PermissionDeniedError, RequestError

logger = logging.getLogger(__name__)

# Paths served without a key; "/" is where Ollama clients check that the server is up.
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/openapi.json"})
OLLAMA_PREFIX = "/api"
ADMIN_PREFIX = "/admin"
PRINCIPAL_STATE_KEY = "enclave_principal"
# Listing routes whose JSON body is filtered: path -> (list field, name fields of an entry).
_LISTINGS = {
    "/v1/models": ("data", ("id",)),
    "/api/tags": ("models", ("name", "model")),
    "/api/ps": ("models", ("name", "model")),
}
_SHOW_MODEL_PREFIX = "/v1/models/"
_OLLAMA_SHOW = "/api/show"
_MAX_SHOW_BODY_BYTES = 1 << 20


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def is_protected(path: str) -> bool:
    """Return whether a path needs authentication: every path but OPEN_PATHS."""
    return path not in OPEN_PATHS


def presented_key(scope: Scope) -> str | None:
    """Return the key from ``Authorization: Bearer KEY``, else from ``x-api-key``."""
    bearer = api_key = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return bearer or api_key


class AccessMiddleware:
    """Authenticates API requests and puts the principal on the request record."""

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return

        path: str = scope["path"]
        try:
            principal = await self.access.authenticate(presented_key(scope),
                                                       admin=_under(path, ADMIN_PREFIX))
        except RequestError as error:
            await send_error(send, error, ollama=_under(path, OLLAMA_PREFIX))
            return
        state = scope.setdefault("state", {})
        state[PRINCIPAL_STATE_KEY] = principal
        record = state.get("enclave_record")
        if record is not None:
            record.principal = principal

        if principal.models == (ALL_MODELS,):
            await self.app(scope, receive, send)
            return
        await self._call_restricted(scope, receive, send, principal)

    async def _call_restricted(self, scope: Scope, receive: Receive, send: Send,
                               principal: Principal) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path.startswith(_SHOW_MODEL_PREFIX):
            model: str | None = unquote(path.removeprefix(_SHOW_MODEL_PREFIX))
            if model and not principal.may_use(model):
                await send_error(send, model_denied(model), ollama=False)
                return
        if method == "POST" and path == _OLLAMA_SHOW:
            receive, model = await _read_show_model(receive)
            if model and not principal.may_use(model):
                await send_error(send, model_denied(model), ollama=True)
                return
        if method == "GET" and path in _LISTINGS:
            send = _filtering_send(send, principal, *_LISTINGS[path])
        await self.app(scope, receive, send)


def model_denied(model: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"This API key may not use the model '{model}'. Ask an administrator to add it to the "
        "key's models.", param="model", code="model_not_allowed")


async def send_error(send: Send, error: RequestError, *, ollama: bool) -> None:
    """Send a request error in the OpenAI shape, or the Ollama shape for /api paths."""
    logger.info("Request rejected: status=%d code=%s", error.status_code, error.code)
    body: dict[str, Any] = {"error": error.message} if ollama else error_body(
        error.message, error.error_type, error.param, error.code)
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]
    if error.retry_after_s:
        headers.append((b"retry-after", str(error.retry_after_s).encode()))
    if error.status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _read_show_model(receive: Receive) -> tuple[Receive, str | None]:
    """Read a small JSON body for its model name; return a receive that replays the body."""
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > _MAX_SHOW_BODY_BYTES:
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # JSON and UTF-8 errors are ValueErrors
        return replay, None  # the route reports the malformed body itself
    if not isinstance(data, dict):
        return replay, None
    model = data.get("model") or data.get("name")
    return replay, model if isinstance(model, str) else None


def _filtering_send(send: Send, principal: Principal, list_field: str,
                    name_fields: tuple[str, ...]) -> Send:
    """Wrap ``send`` so a JSON listing leaves out the models the principal may not use."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def filtered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        if start["status"] == 200:
            body = _filter_listing(body, principal, list_field, name_fields)
        headers = [(name, value) for name, value in start.get("headers", [])
                   if name.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return filtered


def _filter_listing(body: bytes, principal: Principal, list_field: str,
                    name_fields: tuple[str, ...]) -> bytes:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    entries = data.get(list_field) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return body
    data[list_field] = [
        entry for entry in entries
        if isinstance(entry, dict) and any(
            isinstance(entry.get(field), str) and principal.may_use(entry[field])
            for field in name_fields)
    ]
    return json.dumps(data).encode()
