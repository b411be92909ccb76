"""The egress guard inside a running server, exercised through POST /admin/egress/check.

192.0.2.1 (TEST-NET-1, RFC 5737) must never be reached: the guard refuses it before any
packet is sent, so the response comes within milliseconds instead of after a connect timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enclave.access import manage
from enclave.access.store import SqliteKeyStore
from tests.server import ServerProcess, running_server

pytestmark = pytest.mark.slow

BLOCKED_HOST = "192.0.2.1"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str,
                                                                        str]]:
    tmp_path = tmp_path_factory.mktemp("egress")
    store = SqliteKeyStore(tmp_path / "data" / "access" / "keys.db")
    admin_key = manage.create_key(store, manage.KeySpec("root", role="admin")).key
    user_key = manage.create_key(store, manage.KeySpec("alice")).key
    store.close()
    with running_server(tmp_path, "--parallel", "1", "--context-size", "512",
                        env={"ENCLAVE_EMBEDDINGS__ENABLED": "false"}) as server:
        yield server, admin_key, user_key


def check(server: ServerProcess, key: str, host: str, port: int) -> httpx.Response:
    return server.post("/admin/egress/check", headers={"Authorization": f"Bearer {key}"},
                       json={"host": host, "port": port, "timeout_s": 5})


def test_server_blocks_documentation_address(
        guarded: tuple[ServerProcess, str, str]) -> None:
    server, admin_key, _ = guarded
    started = time.monotonic()
    response = check(server, admin_key, BLOCKED_HOST, 443)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "blocked"
    assert body["guard_enabled"] is True
    assert elapsed < 2.0  # a packet sent to 192.0.2.1 would wait for the 5 s timeout
    assert f"Egress guard blocked connection to {BLOCKED_HOST}:443" in server.log()


def test_server_blocks_name_lookup(guarded: tuple[ServerProcess, str, str]) -> None:
    server, admin_key, _ = guarded
    body = check(server, admin_key, "example.com", 443).json()
    assert body["outcome"] == "blocked"
    assert "name lookup of example.com" in body["detail"]


def test_server_reaches_loopback(guarded: tuple[ServerProcess, str, str]) -> None:
    server, admin_key, _ = guarded
    with socket.create_server(("127.0.0.1", 0)) as listener:
        body = check(server, admin_key, "127.0.0.1", listener.getsockname()[1]).json()
    assert body["outcome"] == "connected"


def test_egress_check_needs_admin_key(guarded: tuple[ServerProcess, str, str]) -> None:
    server, _, user_key = guarded
    assert check(server, user_key, BLOCKED_HOST, 443).status_code == 403
    assert server.post("/admin/egress/check",
                       json={"host": BLOCKED_HOST, "port": 443}).status_code == 401


def test_doctor_asks_server_and_blocks_locally(guarded: tuple[ServerProcess, str, str],
                                               tmp_path: Path) -> None:
    server, admin_key, _ = guarded
    environment = {**os.environ, "ENCLAVE_API_KEY": admin_key, "LANG": "C.UTF-8",
                   "LC_ALL": "C.UTF-8", "ENCLAVE_DATA_DIR": str(tmp_path / "data")}
    environment.pop("ENCLAVE_CONFIG", None)
    completed = subprocess.run(
        [sys.executable, "-m", "enclave", "doctor", "--probe", f"{BLOCKED_HOST}:443",
         "--server", server.base_url], capture_output=True, text=True, env=environment,
        timeout=120, cwd=tmp_path)

    lines = completed.stdout.splitlines()
    local = next(line for line in lines if line.startswith("egress from this host"))
    remote = next(line for line in lines if line.startswith("egress from the server"))
    for row in (local, remote):
        assert "PASS" in row
        assert f"{BLOCKED_HOST}:443: blocked by the egress guard" in row
