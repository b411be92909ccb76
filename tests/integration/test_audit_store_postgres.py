"""The PostgreSQL store: concurrent writers, lost connections and an unwritable database.

Each test creates a scratch database on the local server and drops it afterwards. Set
ENCLAVE_TEST_POSTGRES_URL to use another server than postgresql://postgres@127.0.0.1:5432.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from enclave.audit import (
    AppendStatus,
    AuditSettings,
    AuditTrail,
    AuditUnavailableError,
    Principal,
    RequestOpened,
)
from enclave.audit.location import create_store
from enclave.audit.signing import load_signing_key, trusted_keys
from enclave.audit.store import StoreOptions
from enclave.audit.verify import verify_chain

SERVER_URL = os.environ.get("ENCLAVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
RECORDS_PER_PROCESS = 300

WRITER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from enclave.audit import AuditSettings, AuditTrail, Principal, RequestOpened

    url, data_dir, name, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    trail = AuditTrail(AuditSettings(store_url=url, checkpoint_interval=25), data_dir)
    print("ready", flush=True)
    sys.stdin.readline()  # start together with the other process
    lock = threading.Lock()

    def append(worker):
        for index in range(count // 4):
            request_id = f"{name}-{worker}-{index}"
            seq = trail.open_request(RequestOpened(
                request_id, Principal(name), "/v1/chat/completions", "smollm2", "q")).seq
            with lock:
                print(seq, request_id, flush=True)

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trail.close()
""")


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


def opened(request_id: str) -> RequestOpened:
    return RequestOpened(request_id, Principal("alice"), "/v1/chat/completions", "smollm2",
                         "What is the capital of France?")


def terminate_writers(database_url: str) -> int:
    """Close the trail's connections from the server side; return how many were closed."""
    database = database_url.rsplit("/", 1)[1]
    with admin_connection() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'enclave-audit'", (database,),
        ).fetchall()
    return len(rows)


def test_two_processes_build_one_chain(database_url: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENCLAVE_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, str(tmp_path / name), name,
             str(RECORDS_PER_PROCESS)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for name in ("replica-a", "replica-b")
    ]
    for process in processes:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "ready", process.stderr
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    acknowledged: dict[int, str] = {}
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        for line in stdout.splitlines():
            seq, request_id = line.split()
            assert int(seq) not in acknowledged
            acknowledged[int(seq)] = request_id

    keys = trusted_keys([
        load_signing_key(tmp_path / name / "audit" / "signing-key.pem").public_key()
        for name in ("replica-a", "replica-b")])
    store = create_store(database_url, StoreOptions())
    with store.snapshot():
        report = verify_chain(store, keys)
        stored = {row.seq: row.request_id for row in store.rows()}
        signers = {checkpoint.key_id for checkpoint in store.checkpoints()}
    store.close()

    assert sorted(acknowledged) == list(range(1, 2 * RECORDS_PER_PROCESS + 1))
    assert stored == acknowledged
    assert report.ok, report.breaks
    assert signers == set(keys)


def test_writer_reconnects_after_connection_closed(database_url: str, tmp_path: Path) -> None:
    settings = AuditSettings(store_url=database_url)
    with AuditTrail(settings, tmp_path) as trail:
        first = trail.open_request(opened("req-1"))
        closed = terminate_writers(database_url)
        second = trail.open_request(opened("req-2"))

    assert closed == 1
    assert (first.seq, second.seq) == (1, 2)
    assert trail.counters.snapshot()["write_failures"] == 0


def test_read_only_database_fails_closed(database_url: str, tmp_path: Path) -> None:
    settings = AuditSettings(store_url=database_url, write_timeout_s=2.0)
    with AuditTrail(settings, tmp_path) as trail:
        trail.open_request(opened("req-1"))
        make_read_only(database_url)

        with pytest.raises(AuditUnavailableError) as caught:
            trail.open_request(opened("req-2"))

    assert caught.value.status_code == 503
    assert "read-only" in str(caught.value.__cause__)
    assert trail.counters.snapshot()["write_failures"] == 1


def test_read_only_database_spools_fail_open(database_url: str, tmp_path: Path) -> None:
    settings = AuditSettings(store_url=database_url, write_timeout_s=2.0,
                             failure_policy="fail-open")
    trail = AuditTrail(settings, tmp_path)
    trail.open_request(opened("req-1"))
    make_read_only(database_url)

    result = trail.open_request(opened("req-2"))
    trail.close()

    assert result.status is AppendStatus.SPOOLED
    assert "req-2" in (tmp_path / "audit" / "spool.jsonl").read_text(encoding="utf-8")
    assert trail.counters.snapshot()["records_spooled"] == 1


def make_read_only(database_url: str) -> None:
    """Make new sessions of the database read-only and end the current ones."""
    database = database_url.rsplit("/", 1)[1]
    with admin_connection() as admin:
        admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    terminate_writers(database_url)
