"""Keys, scopes and limits on a real server, for every route the app has.

The routes are read from the app at test time, so a route added later is covered without
editing this file. Each route outside the open paths must reject a missing, wrong, revoked
or expired key with 401 in its protocol's error shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave.access import manage
from enclave.access.middleware import OPEN_PATHS
from enclave.access.store import SqliteKeyStore
from enclave.api.app import create_app
from enclave.config import Settings
from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

SERVER_ARGS = ("--parallel", "2", "--context-size", "512")
SERVER_ENV = {"ENCLAVE_EMBEDDINGS__ENABLED": "false"}
UNKNOWN_KEY = "sk-enc-000000000000-" + "a" * 43
USER = [{"role": "user", "content": "Say hi"}]


@dataclass
class KeyedServer:
    server: ServerProcess
    keys: dict[str, str]

    def request(self, method: str, path: str, key: str | None = None,
                **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, self.server.base_url + path, headers=headers,
                             timeout=60, **kwargs)


def create_keys(data_dir: Path) -> dict[str, str]:
    store = SqliteKeyStore(data_dir / "access" / "keys.db")
    specs = {
        "admin": manage.KeySpec(user_id="root", role="admin"),
        "user": manage.KeySpec(user_id="alice"),
        "scoped": manage.KeySpec(user_id="bob", models=("other-*",)),
        "two_per_minute": manage.KeySpec(user_id="carol", requests_per_minute=2),
        "few_tokens": manage.KeySpec(user_id="dave", tokens_per_minute=10),
        "revoked": manage.KeySpec(user_id="erin"),
        "expired": manage.KeySpec(user_id="frank"),
    }
    keys = {name: manage.create_key(store, spec).key for name, spec in specs.items()}
    manage.revoke_key(store, keys["revoked"])
    store.expire(keys["expired"].split("-")[2], time.time() - 1)
    store.close()
    return keys


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """A server whose store has keys, so with require_keys = auto every route needs one."""
    tmp_path = tmp_path_factory.mktemp("keyed")
    keys = create_keys(tmp_path / "data")
    with running_server(tmp_path, *SERVER_ARGS, env=SERVER_ENV) as server:
        yield KeyedServer(server, keys)


def walk_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield (method, path template) of every route, inside included routers as well.

    FastAPI 0.165 keeps an included router as one entry (``original_router`` plus the
    ``include_context`` with its prefix) instead of copying its routes into the app.
    """
    for route in routes:
        if hasattr(route, "original_router"):
            yield from walk_routes(route.original_router.routes,
                                   prefix + route.include_context.prefix)
        elif hasattr(route, "methods") and hasattr(route, "path"):
            for method in sorted(route.methods or ()):
                yield method, prefix + route.path
        elif hasattr(route, "routes"):
            yield from walk_routes(route.routes, prefix + getattr(route, "path", ""))


def app_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """Return (method, path) of every route the app serves, path parameters filled in."""
    settings = Settings(data_dir=tmp_path / "routes-data")
    settings.embeddings.enabled = False
    app = create_app(settings)
    templates = set(walk_routes(app.routes))
    # The OpenAPI schema lists the same routes through FastAPI's public interface.
    templates |= {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
                  for method in operations}
    routes = []
    for method, template in sorted(templates):
        path = re.sub(r"\{prefix\}", "0123456789ab", template)
        path = re.sub(r"\{[^}]+\}", "x", path)
        if method != "HEAD":
            routes.append((method, path))
    return sorted(set(routes))


def test_app_has_api_routes(tmp_path: Path) -> None:
    paths = {path for _, path in app_routes(tmp_path)}
    for expected in ("/v1/chat/completions", "/v1/models", "/admin/keys", "/api/chat"):
        assert expected in paths


def assert_rejected(response: httpx.Response, method: str, path: str, code: str) -> str | None:
    """Return a description of what is wrong with a rejection, or None."""
    if response.status_code != 401:
        return f"{method} {path}: status {response.status_code}, expected 401"
    body = response.json()
    if path.startswith("/api/"):
        if not isinstance(body.get("error"), str):
            return f"{method} {path}: not the Ollama error shape: {body}"
    elif body.get("error", {}).get("code") != code:
        return f"{method} {path}: expected code {code}, got {body}"
    return None


def test_every_route_rejects_bad_keys(keyed: KeyedServer, tmp_path: Path) -> None:
    cases = [(None, "missing_api_key"), (UNKNOWN_KEY, "invalid_api_key"),
             ("not-a-key", "invalid_api_key"), (keyed.keys["revoked"], "revoked_api_key"),
             (keyed.keys["expired"], "expired_api_key")]
    problems = []
    checked = 0
    for method, path in app_routes(tmp_path):
        if path in OPEN_PATHS:
            continue
        for key, code in cases:
            response = keyed.request(method, path, key)
            problems.append(assert_rejected(response, method, path, code))
            checked += 1
    assert checked >= 5 * 15
    assert [problem for problem in problems if problem] == []


def test_every_route_accepts_admin_key(keyed: KeyedServer, tmp_path: Path) -> None:
    statuses = {}
    for method, path in app_routes(tmp_path):
        if path not in OPEN_PATHS:
            statuses[(method, path)] = keyed.request(method, path, keyed.keys["admin"],
                                                     content=b"{}").status_code
    assert [route for route, status in statuses.items() if status in (401, 403)] == []


def test_x_api_key_header_is_accepted(keyed: KeyedServer) -> None:
    response = httpx.get(keyed.server.base_url + "/v1/models",
                         headers={"x-api-key": keyed.keys["user"]}, timeout=30)
    assert response.status_code == 200


def test_open_paths_need_no_key(keyed: KeyedServer) -> None:
    for path in ("/health", "/ready"):
        assert keyed.request("GET", path).status_code == 200


def test_scoped_key_gets_403_for_other_model(keyed: KeyedServer) -> None:
    key = keyed.keys["scoped"]
    chat = keyed.request("POST", "/v1/chat/completions", key,
                         json={"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 1})
    completion = keyed.request("POST", "/v1/completions", key,
                               json={"model": DEFAULT_MODEL, "prompt": "hi", "max_tokens": 1})
    ollama_chat = keyed.request("POST", "/api/chat", key,
                                json={"model": DEFAULT_MODEL, "messages": USER,
                                      "stream": False})
    show = keyed.request("GET", f"/v1/models/{DEFAULT_MODEL}", key)
    ollama_show = keyed.request("POST", "/api/show", key, json={"model": DEFAULT_MODEL})

    for response in (chat, completion, show):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "model_not_allowed"
    for response in (ollama_chat, ollama_show):
        assert response.status_code == 403, response.text
        assert DEFAULT_MODEL in response.json()["error"]


def test_scoped_key_listings_hide_other_models(keyed: KeyedServer) -> None:
    scoped_models = keyed.request("GET", "/v1/models", keyed.keys["scoped"]).json()
    scoped_tags = keyed.request("GET", "/api/tags", keyed.keys["scoped"]).json()
    user_models = keyed.request("GET", "/v1/models", keyed.keys["user"]).json()
    assert scoped_models["data"] == []
    assert scoped_tags["models"] == []
    assert DEFAULT_MODEL in [entry["id"] for entry in user_models["data"]]


def test_full_scope_key_generates(keyed: KeyedServer) -> None:
    response = keyed.request("POST", "/v1/chat/completions", keyed.keys["user"],
                             json={"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 2})
    assert response.status_code == 200, response.text


def test_request_limit_answers_429_with_retry_after(keyed: KeyedServer) -> None:
    key = keyed.keys["two_per_minute"]
    assert keyed.request("GET", "/v1/models", key).status_code == 200
    assert keyed.request("GET", "/v1/models", key).status_code == 200

    openai_response = keyed.request("GET", "/v1/models", key)
    ollama_response = keyed.request("GET", "/api/tags", key)

    assert openai_response.status_code == 429
    assert openai_response.json()["error"]["code"] == "requests_per_minute_exceeded"
    assert 1 <= int(openai_response.headers["Retry-After"]) <= 30
    assert ollama_response.status_code == 429
    assert "2 requests per minute" in ollama_response.json()["error"]
    assert int(ollama_response.headers["Retry-After"]) >= 1


def test_token_limit_applies_to_next_request(keyed: KeyedServer) -> None:
    key = keyed.keys["few_tokens"]
    first = keyed.request("POST", "/v1/chat/completions", key,
                          json={"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 2})
    assert first.status_code == 200, first.text
    usage = first.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] > 10
    time.sleep(0.2)  # the tokens are charged just after the response ends

    second = keyed.request("GET", "/v1/models", key)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "tokens_per_minute_exceeded"
    assert int(second.headers["Retry-After"]) >= 1


def test_admin_api_manages_keys(keyed: KeyedServer) -> None:
    admin = keyed.keys["admin"]
    created = keyed.request("POST", "/admin/keys", admin,
                            json={"user_id": "grace", "models": ["*"], "expires_in_days": 1})
    assert created.status_code == 201, created.text
    new_key = created.json()["key"]
    prefix = created.json()["prefix"]
    assert keyed.request("GET", "/v1/models", new_key).status_code == 200

    listing = keyed.request("GET", "/admin/keys", admin)
    assert prefix in listing.text
    assert new_key.rsplit("-", 1)[1] not in listing.text
    assert all("key" not in view for view in listing.json()["data"])

    rotated = keyed.request("POST", f"/admin/keys/{prefix}/rotate", admin)
    assert rotated.status_code == 201, rotated.text
    assert rotated.json()["replaces"]["status"] == "revoked"
    rotated_key = rotated.json()["key"]
    assert keyed.request("GET", "/v1/models", new_key).json()["error"]["code"] == (
        "revoked_api_key")
    assert keyed.request("GET", "/v1/models", rotated_key).status_code == 200

    revoked = keyed.request("DELETE", f"/admin/keys/{rotated.json()['prefix']}", admin)
    assert revoked.json()["status"] == "revoked"
    # Revoked through this server: rejected at once, not after the cache time.
    assert keyed.request("GET", "/v1/models", rotated_key).status_code == 401


def test_admin_api_rejects_user_key(keyed: KeyedServer) -> None:
    response = keyed.request("GET", "/admin/keys", keyed.keys["user"])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_required"


def test_admin_api_rejects_invalid_key_spec(keyed: KeyedServer) -> None:
    response = keyed.request("POST", "/admin/keys", keyed.keys["admin"],
                             json={"user_id": "has space"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "user_id"


def test_keyless_server_accepts_any_bearer(server: ServerProcess) -> None:
    """Cherry Studio always sends some key; a loopback server without keys ignores it."""
    for headers in ({}, {"Authorization": "Bearer sk-cherry-studio"}, {"x-api-key": "x"}):
        response = server.get("/v1/models", headers=headers)
        assert response.status_code == 200, response.text
