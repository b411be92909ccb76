"""The audit trail as the request path uses it: records, keys, failure policies, counters."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from enclave.audit import (
    AppendStatus,
    AuditSettings,
    AuditTrail,
    AuditUnavailableError,
    Principal,
    RequestClosed,
    RequestOpened,
)
from enclave.audit.errors import AuditError
from enclave.audit.signing import load_signing_key
from enclave.audit.sqlite_store import SQLiteStore
from enclave.audit.store import StoreOptions

QUERY = "Summarize the attached contract for [PERSON_1] in three bullet points, please."


def opened(request_id: str, user_id: str = "alice") -> RequestOpened:
    return RequestOpened(request_id, Principal(user_id, "sk-ab12"), "/v1/chat/completions",
                         "smollm2", QUERY, client="127.0.0.1", pii={"PERSON": 1, "EMAIL": 0},
                         privacy_profile="finance")


def closed(request_id: str, status: int = 200) -> RequestClosed:
    return RequestClosed(request_id, status, response_chars=42, prompt_tokens=30,
                         completion_tokens=12, latency_ms=85.25)


def stored_records(data_dir: Path) -> list[dict[str, object]]:
    with sqlite3.connect(data_dir / "audit" / "audit.db") as connection:
        rows = connection.execute("SELECT record FROM audit_records ORDER BY seq").fetchall()
    return [json.loads(row[0]) for row in rows]


@contextmanager
def write_locked(data_dir: Path) -> Iterator[None]:
    """Hold SQLite's write lock from another connection, so the trail cannot commit."""
    connection = sqlite3.connect(data_dir / "audit" / "audit.db", isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_open_and_complete_commit_linked_records(tmp_path: Path) -> None:
    with AuditTrail(AuditSettings(), tmp_path) as trail:
        first = trail.open_request(opened("req-1"))
        second = trail.complete_request(closed("req-1"))

    records = stored_records(tmp_path)
    assert first.status is AppendStatus.COMMITTED
    assert (first.seq, second.seq) == (1, 2)
    assert [record["kind"] for record in records] == ["open", "close"]
    assert records[0]["request_id"] == records[1]["request_id"] == "req-1"
    assert records[0]["query_excerpt"] == QUERY[:50]
    assert records[0]["pii"] == {"PERSON": 1}
    assert records[0]["key_prefix"] == "sk-ab12"
    assert records[0]["time"].endswith("Z")
    assert len(records[0]["time"]) == 27  # microseconds: 2025-01-31T12:00:00.000001Z
    assert records[1]["latency_ms"] == 85.25
    assert trail.stats() == {
        "records_written_total": 2, "write_failures_total": 0, "write_timeouts_total": 0,
        "records_spooled_total": 0, "records_replayed_total": 0, "records_dropped_total": 0,
        "verify_failures_total": 0, "spooled_records": 0}


def test_digest_only_stores_no_query_text(tmp_path: Path) -> None:
    with AuditTrail(AuditSettings(digest_only=True), tmp_path) as trail:
        trail.open_request(opened("req-1"))

    record = stored_records(tmp_path)[0]
    assert "query_excerpt" not in record
    assert len(str(record["query_sha256"])) == 64
    assert QUERY[:10] not in json.dumps(record)


def test_excerpt_length_is_configurable(tmp_path: Path) -> None:
    with AuditTrail(AuditSettings(excerpt_chars=8), tmp_path) as trail:
        trail.open_request(opened("req-1"))

    assert stored_records(tmp_path)[0]["query_excerpt"] == QUERY[:8]


def test_full_key_rejected_as_prefix() -> None:
    with pytest.raises(ValueError, match="never the key itself"):
        Principal("alice", "sk-" + "a" * 40)


def test_signing_key_created_private(tmp_path: Path) -> None:
    AuditTrail(AuditSettings(), tmp_path).close()

    key_path = tmp_path / "audit" / "signing-key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "audit" / "audit.db").stat().st_mode) == 0o600


def test_readable_signing_key_rejected(tmp_path: Path) -> None:
    AuditTrail(AuditSettings(), tmp_path).close()
    key_path = tmp_path / "audit" / "signing-key.pem"
    key_path.chmod(0o644)

    with pytest.raises(AuditError, match="chmod 600"):
        load_signing_key(key_path)


def test_concurrent_async_requests_committed(tmp_path: Path) -> None:
    async def serve_requests(trail: AuditTrail) -> list[int | None]:
        results = await asyncio.gather(*(trail.open_request_async(opened(f"req-{index}"))
                                         for index in range(200)))
        return [result.seq for result in results]

    with AuditTrail(AuditSettings(), tmp_path) as trail:
        seqs = asyncio.run(serve_requests(trail))

    assert sorted(seq for seq in seqs if seq is not None) == list(range(1, 201))
    assert trail.verify().ok


def test_fail_closed_raises_503_when_store_locked(tmp_path: Path) -> None:
    settings = AuditSettings(write_timeout_s=0.4)
    with AuditTrail(settings, tmp_path) as trail:
        with write_locked(tmp_path), pytest.raises(AuditUnavailableError) as caught:
            trail.open_request(opened("req-1"))
        after = trail.open_request(opened("req-2"))

    assert caught.value.status_code == 503
    assert caught.value.code == "audit_unavailable"
    assert after.status is AppendStatus.COMMITTED
    assert trail.counters.snapshot()["write_failures"] == 1
    assert [record["request_id"] for record in stored_records(tmp_path)] == ["req-2"]


def test_fail_open_spools_and_replays(tmp_path: Path) -> None:
    settings = AuditSettings(write_timeout_s=0.4, failure_policy="fail-open")
    spool_file = tmp_path / "audit" / "spool.jsonl"
    with AuditTrail(settings, tmp_path) as trail:
        with write_locked(tmp_path):
            failed = trail.open_request(opened("req-1"))
            spooled_lines = spool_file.read_text(encoding="utf-8").splitlines()
            waiting = trail.stats()["spooled_records"]
        after = trail.open_request(opened("req-2"))
    stats = trail.counters.snapshot()  # after close(): the replay follows the commit of req-2

    assert failed.status is AppendStatus.SPOOLED
    assert waiting == 1
    assert [json.loads(line)["request_id"] for line in spooled_lines] == ["req-1"]
    assert after.status is AppendStatus.COMMITTED
    assert stats["records_spooled"] == 1
    assert stats["records_replayed"] == 1
    assert not spool_file.exists()
    records = stored_records(tmp_path)
    assert [record["request_id"] for record in records] == ["req-2", "req-1"]
    assert records[1]["spooled"] is True


def test_spool_file_imported_at_start(tmp_path: Path) -> None:
    settings = AuditSettings(write_timeout_s=0.4, failure_policy="fail-open")
    first = AuditTrail(settings, tmp_path)
    with write_locked(tmp_path):
        spooled = first.open_request(opened("req-1"))
        first.close()  # stops while the store is still locked, so req-1 stays spooled

    with AuditTrail(settings, tmp_path) as second:
        second.open_request(opened("req-2"))

    assert spooled.status is AppendStatus.SPOOLED
    assert [record["request_id"] for record in stored_records(tmp_path)] == ["req-1", "req-2"]
    assert not (tmp_path / "audit" / "spool.jsonl").exists()


def test_spool_drops_oldest_beyond_limit(tmp_path: Path) -> None:
    settings = AuditSettings(write_timeout_s=0.4, failure_policy="fail-open",
                             spool_max_records=2)
    with AuditTrail(settings, tmp_path) as trail:
        with write_locked(tmp_path):
            for index in range(3):
                trail.open_request(opened(f"req-{index}"))
        stats = trail.counters.snapshot()

    assert stats["records_spooled"] == 3
    assert stats["records_dropped"] == 1
    # close() committed the two records still in memory. The dropped one stays in the side
    # file, which the next start imports.
    spool_file = tmp_path / "audit" / "spool.jsonl"
    assert len(spool_file.read_text(encoding="utf-8").splitlines()) == 3
    assert [record["request_id"] for record in stored_records(tmp_path)] == ["req-1", "req-2"]

    AuditTrail(settings, tmp_path).close()

    assert [record["request_id"] for record in stored_records(tmp_path)] == [
        "req-1", "req-2", "req-0"]
    assert not spool_file.exists()


def test_unusable_store_stops_start_under_fail_closed(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "audit.db").write_bytes(b"this is not a database" * 100)

    with pytest.raises(AuditError, match="Cannot prepare the audit store"):
        AuditTrail(AuditSettings(), tmp_path)


def test_verify_failure_counted(tmp_path: Path) -> None:
    with AuditTrail(AuditSettings(), tmp_path) as trail:
        trail.open_request(opened("req-1"))
        trail.complete_request(closed("req-1"))
        with sqlite3.connect(tmp_path / "audit" / "audit.db") as connection:
            connection.execute("UPDATE audit_records SET status = 500 WHERE seq = 2")
        report = trail.verify()

    assert not report.ok
    assert trail.counters.snapshot()["verify_failures"] == 1


def test_close_signs_final_checkpoint(tmp_path: Path) -> None:
    settings = AuditSettings(checkpoint_interval=1000)
    with AuditTrail(settings, tmp_path) as trail:
        for index in range(5):
            trail.open_request(opened(f"req-{index}"))

    store = SQLiteStore(tmp_path / "audit" / "audit.db", StoreOptions())
    checkpoints = store.checkpoints()
    store.close()
    assert checkpoints[-1].seq == 5


def test_unserializable_record_fails_alone(tmp_path: Path) -> None:
    broken = RequestOpened("req-1", Principal("alice"), "/v1/chat/completions", "smollm2",
                           QUERY, client=object())  # type: ignore[arg-type]

    with AuditTrail(AuditSettings(), tmp_path) as trail:
        with pytest.raises(AuditUnavailableError):
            trail.open_request(broken)
        after = trail.open_request(opened("req-2"))

    assert after.seq == 1
    assert trail.counters.snapshot()["write_failures"] == 1
