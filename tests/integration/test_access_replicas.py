"""Two server processes sharing one key store (PostgreSQL) and one rate-limit store.

Limits must hold across both, and a key revoked through one must stop working on the other
within ``access.cache_ttl_s``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from enclave.access import manage
from enclave.access.store_postgres import PostgresKeyStore
from tests.access_stores import scratch_postgres, scratch_redis
from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

CACHE_TTL_S = 1.0


@pytest.fixture(scope="module", params=["redis", "postgresql"])
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[tuple[ServerProcess, ServerProcess, dict[str, str]]]:
    with ExitStack() as stack:
        key_store_url = stack.enter_context(scratch_postgres())
        limit_url = stack.enter_context(
            scratch_redis() if request.param == "redis" else scratch_postgres())

        store = PostgresKeyStore(key_store_url)
        keys = {
            "admin": manage.create_key(store, manage.KeySpec("root", role="admin")).key,
            "three_per_minute": manage.create_key(
                store, manage.KeySpec("alice", requests_per_minute=3)).key,
            "few_tokens": manage.create_key(
                store, manage.KeySpec("bob", tokens_per_minute=10)).key,
            "to_revoke": manage.create_key(store, manage.KeySpec("carol")).key,
        }
        store.close()

        environment = {
            "ENCLAVE_ACCESS__STORE_URL": key_store_url,
            "ENCLAVE_ACCESS__RATE_LIMIT_URL": limit_url,
            "ENCLAVE_ACCESS__CACHE_TTL_S": str(CACHE_TTL_S),
            "ENCLAVE_EMBEDDINGS__ENABLED": "false",
        }
        servers = [
            stack.enter_context(running_server(
                tmp_path_factory.mktemp(f"replica-{name}"), "--parallel", "1",
                "--context-size", "512", env=environment, wait=False))
            for name in ("a", "b")
        ]
        for server in servers:  # both load their model at the same time
            server.wait_ready()
        yield servers[0], servers[1], keys


def get_models(server: ServerProcess, key: str) -> httpx.Response:
    return server.get("/v1/models", headers={"Authorization": f"Bearer {key}"})


def test_request_limit_holds_across_replicas(
        replicas: tuple[ServerProcess, ServerProcess, dict[str, str]]) -> None:
    first, second, keys = replicas
    key = keys["three_per_minute"]
    statuses = [get_models(server, key).status_code for server in (first, second, first)]
    refused = get_models(second, key)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "requests_per_minute_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 20


def test_token_limit_holds_across_replicas(
        replicas: tuple[ServerProcess, ServerProcess, dict[str, str]]) -> None:
    first, second, keys = replicas
    key = keys["few_tokens"]
    response = first.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": DEFAULT_MODEL, "max_tokens": 2,
                                "messages": [{"role": "user", "content": "Say hi"}]})
    assert response.status_code == 200, response.text
    time.sleep(0.3)  # the tokens are charged just after the response ends

    refused = get_models(second, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tokens_per_minute_exceeded"


def test_revocation_reaches_other_replica_within_cache_ttl(
        replicas: tuple[ServerProcess, ServerProcess, dict[str, str]]) -> None:
    first, second, keys = replicas
    key = keys["to_revoke"]
    assert get_models(second, key).status_code == 200  # now cached by the second replica

    prefix = key.split("-")[2]
    revoked = httpx.delete(f"{first.base_url}/admin/keys/{prefix}",
                           headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=30)
    revoked_at = time.monotonic()
    assert revoked.status_code == 200, revoked.text
    assert get_models(first, key).status_code == 401

    while get_models(second, key).status_code == 200:
        assert time.monotonic() - revoked_at < CACHE_TTL_S + 1.0, "still accepted"
        time.sleep(0.05)
    assert get_models(second, key).json()["error"]["code"] == "revoked_api_key"


def test_key_created_elsewhere_works_on_both(
        replicas: tuple[ServerProcess, ServerProcess, dict[str, str]]) -> None:
    first, second, keys = replicas
    created = httpx.post(f"{first.base_url}/admin/keys", json={"user_id": "dave"},
                         headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=30)
    assert created.status_code == 201, created.text
    assert get_models(second, created.json()["key"]).status_code == 200
