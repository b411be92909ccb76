"""Tampering with a stored chain, and what verification reports for each kind of break."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit.chain import GENESIS_HASH, Head, link_hash, seal
from enclave.audit.records import Principal, RequestOpened, now_us, open_record
from enclave.audit.signing import CheckpointSigner, trusted_keys
from enclave.audit.sqlite_store import SQLiteStore
from enclave.audit.store import StoreOptions
from enclave.audit.verify import BreakKind, VerifyReport, verify_chain

RECORDS = 40
# The first append always gets a checkpoint (none exists yet), then every tenth record:
# checkpoints sit at seq 1, 11, 21 and 31.
INTERVAL = 10

SIGNER = CheckpointSigner(Ed25519PrivateKey.generate())


def request(request_id: str, user_id: str = "alice") -> dict[str, object]:
    event = RequestOpened(request_id, Principal(user_id, "sk-ab12"), "/v1/chat/completions",
                          "smollm2", "What is the capital of France?")
    return open_record(event, excerpt_chars=50, digest_only=False, time_us=now_us())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A store of RECORDS open records appended one by one, with signed checkpoints."""
    path = tmp_path / "audit.db"
    store = SQLiteStore(path, StoreOptions(signer=SIGNER, checkpoint_interval=INTERVAL,
                                           checkpoint_max_age_s=3600))
    store.migrate()
    for index in range(RECORDS):
        store.append([request(f"req-{index}")])
    store.close()
    return path


@pytest.fixture
def tamper(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection to the store, as an attacker with file access would use."""
    connection = sqlite3.connect(db_path, isolation_level=None)
    yield connection
    connection.close()


def verify(path: Path, keys: list[Ed25519PrivateKey] | None = None) -> VerifyReport:
    public = [key.public_key() for key in keys] if keys else [SIGNER.public_key]
    store = SQLiteStore(path, StoreOptions())
    with store.snapshot():
        report = verify_chain(store, trusted_keys(public))
    store.close()
    return report


def spans(report: VerifyReport) -> list[tuple[BreakKind, int, int]]:
    return [(item.kind, item.first_seq, item.last_seq) for item in report.breaks]


def move(connection: sqlite3.Connection, old_seq: int, new_seq: int) -> None:
    connection.execute("UPDATE audit_records SET seq = ? WHERE seq = ?", (new_seq, old_seq))


def insert_forged(connection: sqlite3.Connection, after_seq: int) -> None:
    """Insert a well-formed record chained to ``after_seq``, as a forger with the algorithm
    but without the signing key would."""
    prev_hash = connection.execute("SELECT hash FROM audit_records WHERE seq = ?",
                                   (after_seq,)).fetchone()[0]
    row = seal([request("forged", "mallory")], Head(after_seq, prev_hash))[0]
    connection.execute(
        "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row.seq, row.kind, row.time_us, row.request_id, row.user_id, row.model, row.status,
         row.error_code, row.record, row.prev_hash, row.hash),
    )


def test_untouched_chain_verifies(db_path: Path) -> None:
    report = verify(db_path)

    assert report.ok, report.breaks
    assert report.records_checked == RECORDS
    assert report.checkpoints_checked == 4
    assert report.start == "genesis"


def test_first_record_links_to_genesis(db_path: Path, tamper: sqlite3.Connection) -> None:
    prev_hash, record, row_hash = tamper.execute(
        "SELECT prev_hash, record, hash FROM audit_records WHERE seq = 1").fetchone()

    assert prev_hash == GENESIS_HASH
    assert row_hash == link_hash(GENESIS_HASH, record)
    assert json.loads(record)["seq"] == 1


def test_edited_field_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    tamper.execute("UPDATE audit_records SET record = replace(record, '\"alice\"', "
                   "'\"mallory\"') WHERE seq = 7")

    report = verify(db_path)

    assert spans(report) == [(BreakKind.EDITED, 7, 7)]
    assert "does not match its hash" in report.breaks[0].detail


def test_edited_search_column_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    tamper.execute("UPDATE audit_records SET user_id = 'mallory' WHERE seq = 7")

    report = verify(db_path)

    assert spans(report) == [(BreakKind.EDITED, 7, 7)]
    assert "column user_id" in report.breaks[0].detail


def test_deleted_record_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    tamper.execute("DELETE FROM audit_records WHERE seq = 12")

    assert spans(verify(db_path)) == [(BreakKind.DELETED, 12, 12)]


def test_deleted_and_renumbered_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    tamper.execute("DELETE FROM audit_records WHERE seq = 12")
    for seq in range(13, RECORDS + 1):
        move(tamper, seq, seq - 1)

    report = verify(db_path)

    assert report.breaks[0].kind == BreakKind.DELETED
    assert report.breaks[0].first_seq == 12
    assert "sealed as seq 12 is missing" in report.breaks[0].detail
    assert (BreakKind.TRUNCATED, RECORDS, RECORDS) in spans(report)


def test_deleted_tail_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    tamper.execute("DELETE FROM audit_records WHERE seq >= 38")

    assert spans(verify(db_path)) == [(BreakKind.TRUNCATED, 38, 40)]


def test_forged_record_inserted_midway_detected(
    db_path: Path, tamper: sqlite3.Connection
) -> None:
    for seq in range(RECORDS, 20, -1):
        move(tamper, seq, seq + 1)
    insert_forged(tamper, after_seq=20)

    report = verify(db_path)

    assert (BreakKind.INSERTED, 21, 21) in spans(report)
    assert "seq 22 links to seq 20" in next(
        item.detail for item in report.breaks if item.kind == BreakKind.INSERTED)


def test_forged_record_appended_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    insert_forged(tamper, after_seq=RECORDS)

    assert spans(verify(db_path)) == [(BreakKind.INSERTED, RECORDS + 1, RECORDS + 1)]


def test_swapped_records_detected(db_path: Path, tamper: sqlite3.Connection) -> None:
    move(tamper, 15, -1)
    move(tamper, 16, 15)
    move(tamper, -1, 16)

    assert spans(verify(db_path)) == [(BreakKind.REORDERED, 15, 16)]


def test_edited_checkpoint_signature_detected(
    db_path: Path, tamper: sqlite3.Connection
) -> None:
    tamper.execute("UPDATE audit_checkpoints SET signature = (SELECT signature FROM "
                   "audit_checkpoints WHERE seq = 11) WHERE seq = 21")

    assert spans(verify(db_path)) == [(BreakKind.BAD_SIGNATURE, 21, 21)]


def test_checkpoint_from_unknown_key_detected(db_path: Path) -> None:
    report = verify(db_path, keys=[Ed25519PrivateKey.generate()])

    assert {item.kind for item in report.breaks} == {BreakKind.UNKNOWN_KEY}
    assert [item.first_seq for item in report.breaks] == [1, 11, 21, 31]


def test_rehashed_rewrite_caught_by_checkpoint(
    db_path: Path, tamper: sqlite3.Connection
) -> None:
    # Edit seq 25 and recompute every hash after it, head included: the chain alone is
    # consistent again, so only the checkpoint signed at seq 31 shows the rewrite.
    prev_hash = tamper.execute("SELECT hash FROM audit_records WHERE seq = 24").fetchone()[0]
    rows = tamper.execute(
        "SELECT seq, record FROM audit_records WHERE seq >= 25 ORDER BY seq").fetchall()
    for seq, record in rows:
        if seq == 25:
            record = record.replace('"alice"', '"mallory"')
        row_hash = link_hash(prev_hash, record)
        tamper.execute("UPDATE audit_records SET record = ?, prev_hash = ?, hash = ?, "
                       "user_id = ? WHERE seq = ?",
                       (record, prev_hash, row_hash, json.loads(record)["user_id"], seq))
        prev_hash = row_hash
    tamper.execute("UPDATE audit_head SET hash = ?", (prev_hash,))

    assert spans(verify(db_path)) == [(BreakKind.CHECKPOINT_MISMATCH, 22, 31)]


def test_rehashed_single_record_breaks_next_link(
    db_path: Path, tamper: sqlite3.Connection
) -> None:
    prev_hash, record = tamper.execute(
        "SELECT prev_hash, record FROM audit_records WHERE seq = 7").fetchone()
    record = record.replace('"alice"', '"mallory"')
    tamper.execute("UPDATE audit_records SET record = ?, hash = ?, user_id = 'mallory' "
                   "WHERE seq = 7", (record, link_hash(prev_hash, record)))

    report = verify(db_path)

    assert spans(report) == [(BreakKind.EDITED, 7, 8)]
    assert "seq 8 does not link to seq 7" in report.breaks[0].detail


def test_verify_walk_streams_pages(tmp_path: Path) -> None:
    # More rows than one page of the reader (10,000), appended in bulk batches.
    store = SQLiteStore(tmp_path / "audit.db", StoreOptions(signer=SIGNER))
    store.migrate()
    batch = [request(f"req-{index}") for index in range(5000)]
    for _ in range(5):
        store.append(batch)
    store.close()

    report = verify(tmp_path / "audit.db")

    assert report.ok, report.breaks
    assert report.records_checked == 25_000


@pytest.mark.parametrize("edit", [
    lambda record: record.replace('"seq":3', '"seq":4'),
    lambda record: record[:-1],
    lambda record: "[]",
], ids=["sealed-seq", "truncated-json", "not-an-object"])
def test_malformed_record_reported_as_edited(
    db_path: Path, tamper: sqlite3.Connection, edit: Callable[[str], str]
) -> None:
    record = tamper.execute("SELECT record FROM audit_records WHERE seq = 3").fetchone()[0]
    tamper.execute("UPDATE audit_records SET record = ? WHERE seq = 3", (edit(record),))

    report = verify(db_path)

    assert report.breaks[0].kind == BreakKind.EDITED
    assert report.breaks[0].first_seq == 3
