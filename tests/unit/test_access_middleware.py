"""AccessMiddleware in process: error shapes, the principal on the record, model scopes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from enclave.access import manage
from enclave.access.control import AccessControl
from enclave.access.keys import ANONYMOUS
from enclave.access.limits import InProcessRateLimiter
from enclave.access.middleware import AccessMiddleware, presented_key
from enclave.access.settings import AccessSettings
from enclave.access.store import SqliteKeyStore
from enclave.api.lifecycle import RequestRecord

LISTING = {"object": "list", "data": [{"id": "alpha"}, {"id": "beta"}]}
OLLAMA_TAGS = {"models": [{"name": "alpha:latest", "model": "alpha:latest"},
                          {"name": "beta:latest", "model": "beta:latest"}]}


class Downstream:
    """The app behind the middleware: records what reached it and responds with a body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.scope: Scope | None = None
        self.request_body = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        message = await receive()
        self.request_body = message.get("body", b"")
        payload = json.dumps(self.body).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def call(app: AccessMiddleware, method: str, path: str, key: str | None = None,
         body: bytes = b"", header: bytes = b"authorization") -> tuple[int, dict[str, str], Any,
                                                                     RequestRecord]:
    record = RequestRecord(request_id="req-1", method=method, route=path, client="127.0.0.1")
    headers = []
    if key is not None:
        value = f"Bearer {key}" if header == b"authorization" else key
        headers.append((header, value.encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers,
             "state": {"enclave_record": record}}
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start = messages[0]
    response_headers = {name.decode(): value.decode() for name, value in start["headers"]}
    payload = b"".join(message.get("body", b"") for message in messages[1:])
    assert int(response_headers["content-length"]) == len(payload)
    return start["status"], response_headers, json.loads(payload), record


@pytest.fixture
def control(tmp_path: Path) -> AccessControl:
    return AccessControl(AccessSettings(), SqliteKeyStore(tmp_path / "keys.db"),
                         InProcessRateLimiter(), listens_on_loopback=True)


def new_key(control: AccessControl, **fields: Any) -> str:
    return manage.create_key(control.store, manage.KeySpec(user_id="alice", **fields)).key


def test_missing_key_gets_openai_shape(control: AccessControl) -> None:
    new_key(control)
    downstream = Downstream(LISTING)
    status, headers, body, record = call(AccessMiddleware(downstream, control), "GET",
                                         "/v1/models")
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert body["error"]["code"] == "missing_api_key"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert downstream.scope is None
    assert record.principal is None


def test_missing_key_gets_ollama_shape_under_api(control: AccessControl) -> None:
    new_key(control)
    status, _, body, _ = call(AccessMiddleware(Downstream(OLLAMA_TAGS), control), "GET",
                              "/api/tags")
    assert status == 401
    assert isinstance(body["error"], str)
    assert "Missing API key" in body["error"]


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/", "/docs",
                                  "/openapi.json"])
def test_open_paths_pass_without_key(control: AccessControl, path: str) -> None:
    new_key(control)
    status, _, _, _ = call(AccessMiddleware(Downstream({}), control), "GET", path)
    assert status == 200


@pytest.mark.parametrize("path", ["/rerank", "/v1/embeddings", "/favicon.ico", "/v2/other"])
def test_other_paths_need_key(control: AccessControl, path: str) -> None:
    new_key(control)
    status, _, _, _ = call(AccessMiddleware(Downstream({}), control), "POST", path)
    assert status == 401


@pytest.mark.parametrize("header", [b"authorization", b"x-api-key"])
def test_valid_key_puts_principal_on_record(control: AccessControl, header: bytes) -> None:
    key = new_key(control)
    downstream = Downstream(LISTING)
    status, _, body, record = call(AccessMiddleware(downstream, control), "GET", "/v1/models",
                                   key, header=header)
    assert status == 200
    assert body == LISTING
    assert record.principal.user_id == "alice"
    assert record.principal.key_prefix == key.split("-")[2]
    assert downstream.scope is not None
    assert downstream.scope["state"]["enclave_principal"] is record.principal


def test_keyless_server_records_anonymous(control: AccessControl) -> None:
    _, _, _, record = call(AccessMiddleware(Downstream(LISTING), control), "GET",
                           "/v1/models", "sk-cherry-studio-placeholder")
    assert record.principal is ANONYMOUS


def test_scoped_key_listings_hide_other_models(control: AccessControl) -> None:
    key = new_key(control, models=("alpha",))
    _, _, openai_body, _ = call(AccessMiddleware(Downstream(LISTING), control), "GET",
                                "/v1/models", key)
    _, _, ollama_body, _ = call(AccessMiddleware(Downstream(OLLAMA_TAGS), control), "GET",
                                "/api/tags", key)
    assert [entry["id"] for entry in openai_body["data"]] == ["alpha"]
    assert [entry["name"] for entry in ollama_body["models"]] == ["alpha:latest"]


def test_scoped_key_cannot_show_other_model(control: AccessControl) -> None:
    key = new_key(control, models=("alpha",))
    app = AccessMiddleware(Downstream({"id": "beta"}), control)

    status, _, body, _ = call(app, "GET", "/v1/models/beta", key)
    assert status == 403
    assert body["error"]["code"] == "model_not_allowed"

    status, _, body, _ = call(app, "POST", "/api/show", key, body=b'{"model": "beta"}')
    assert status == 403
    assert "beta" in body["error"]


def test_show_allowed_model_replays_body(control: AccessControl) -> None:
    key = new_key(control, models=("alpha",))
    downstream = Downstream({"details": {}})
    status, _, _, _ = call(AccessMiddleware(downstream, control), "POST", "/api/show", key,
                           body=b'{"name": "alpha:latest"}')
    assert status == 200
    assert downstream.request_body == b'{"name": "alpha:latest"}'


def test_rate_limited_key_gets_retry_after(control: AccessControl) -> None:
    key = new_key(control, requests_per_minute=1)
    app = AccessMiddleware(Downstream(OLLAMA_TAGS), control)
    assert call(app, "GET", "/api/tags", key)[0] == 200
    status, headers, body, _ = call(app, "GET", "/api/tags", key)
    assert status == 429
    assert headers["retry-after"] == "60"
    assert "requests per minute" in body["error"]


def test_admin_path_needs_admin_key(control: AccessControl) -> None:
    user_key = new_key(control)
    admin_key = new_key(control, role="admin")
    app = AccessMiddleware(Downstream({"object": "list", "data": []}), control)
    status, _, body, _ = call(app, "GET", "/admin/keys", user_key)
    assert status == 403
    assert body["error"]["code"] == "admin_required"
    assert call(app, "GET", "/admin/keys", admin_key)[0] == 200


@pytest.mark.parametrize(("headers", "expected"), [
    ([(b"authorization", b"Bearer  abc ")], "abc"),
    ([(b"authorization", b"bearer abc")], "abc"),
    ([(b"authorization", b"Basic abc")], None),
    ([(b"x-api-key", b"xyz")], "xyz"),
    ([(b"authorization", b"Bearer abc"), (b"x-api-key", b"xyz")], "abc"),
    ([], None),
])
def test_presented_key_sources(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert presented_key({"headers": headers}) == expected
