"""Servers writing their audit trail to PostgreSQL: one shared chain, and an unwritable store.

Each test creates a scratch database on the local server and drops it afterwards. Set
ENCLAVE_TEST_POSTGRES_URL to use another server than postgresql://postgres@127.0.0.1:5432.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from enclave.audit.signing import CheckpointSigner, load_signing_key
from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

SERVER_URL = os.environ.get("ENCLAVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
SERVER_ARGS = ("--parallel", "2", "--context-size", "512")
REQUESTS_PER_SERVER = 6


def admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {SERVER_URL}: {exc}")


@pytest.fixture
def database_url() -> Iterator[str]:
    """A scratch database, dropped (with its connections) after the test."""
    name = f"enclave_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{SERVER_URL}/{name}"
    finally:
        with admin_connection() as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def start_servers(stack: ExitStack, tmp_path: Path, database_url: str,
                  policies: tuple[str, str]) -> list[ServerProcess]:
    """Start one server per failure policy, all at once, each with its own data folder."""
    servers = []
    for index, policy in enumerate(policies):
        env = {"ENCLAVE_EMBEDDINGS__ENABLED": "false", "ENCLAVE_AUDIT__STORE_URL": database_url,
               "ENCLAVE_AUDIT__FAILURE_POLICY": policy, "ENCLAVE_AUDIT__WRITE_TIMEOUT_S": "2"}
        folder = tmp_path / f"replica-{index}"
        folder.mkdir()
        servers.append(stack.enter_context(
            running_server(folder, *SERVER_ARGS, env=env, wait=False)))
    for server in servers:
        server.wait_ready()
    return servers


def chat(server: ServerProcess, request_id: str) -> httpx.Response:
    return server.post("/v1/chat/completions", headers={"X-Request-Id": request_id},
                       json={"model": DEFAULT_MODEL, "max_tokens": 3,
                             "messages": [{"role": "user", "content": "Hi"}]})


def metric(server: ServerProcess, name: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_two_servers_build_one_chain(database_url: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        servers = start_servers(stack, tmp_path, database_url, ("fail-closed", "fail-closed"))
        with ThreadPoolExecutor(max_workers=4) as pool:
            responses = list(pool.map(
                lambda job: chat(servers[job % 2], f"replica{job % 2}-{job}"),
                range(2 * REQUESTS_PER_SERVER)))
        assert [response.status_code for response in responses] == [200] * len(responses)

    with psycopg.connect(database_url) as connection:
        rows = connection.execute("SELECT request_id, kind FROM audit_records").fetchall()
    expected = {(f"replica{job % 2}-{job}", kind)
                for job in range(2 * REQUESTS_PER_SERVER) for kind in ("open", "close")}
    assert sorted(rows) == sorted(expected)
    # Both servers shut down gracefully, so the head is covered by a signed checkpoint,
    # signed by whichever server stopped last with records it had not yet covered.

    other_key = tmp_path / "replica-1.pem"
    other_key.write_text(CheckpointSigner(load_signing_key(
        tmp_path / "replica-1" / "data" / "audit" / "signing-key.pem")).public_key_pem())
    env = {**os.environ, "ENCLAVE_DATA_DIR": str(tmp_path / "replica-0" / "data"),
           "ENCLAVE_AUDIT__STORE_URL": database_url}
    env.pop("ENCLAVE_CONFIG", None)
    verified = subprocess.run(
        [sys.executable, "-m", "enclave", "audit", "verify", "--public-key", str(other_key)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{4 * REQUESTS_PER_SERVER} records" in verified.stdout


def test_unwritable_store(database_url: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        closed, opened = start_servers(stack, tmp_path, database_url,
                                       ("fail-closed", "fail-open"))
        assert chat(closed, "before-outage").status_code == 200
        make_read_only(database_url)

        rejected = chat(closed, "outage-closed")
        served = chat(opened, "outage-open")

        assert rejected.status_code == 503
        assert rejected.json()["error"]["code"] == "audit_unavailable"
        assert rejected.headers["Retry-After"]
        assert served.status_code == 200
        assert metric(opened, "enclave_audit_write_failures_total") >= 1
        assert metric(opened, "enclave_audit_records_spooled_total") >= 1
        assert metric(closed, "enclave_audit_write_failures_total") >= 1


def make_read_only(database_url: str) -> None:
    """Make new sessions of the database read-only and end the current ones."""
    database = database_url.rsplit("/", 1)[1]
    with admin_connection() as admin:
        admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
