"""Purging expired segments keeps the rest of the chain verifiable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit.errors import AuditError
from enclave.audit.records import Principal, RequestOpened, now_us, open_record, parse_time
from enclave.audit.retention import plan_purge, purge_expired, retention_cutoff_us
from enclave.audit.signing import CheckpointSigner, trusted_keys
from enclave.audit.sqlite_store import SQLiteStore
from enclave.audit.store import StoreOptions
from enclave.audit.verify import BreakKind, verify_chain

SIGNER = CheckpointSigner(Ed25519PrivateKey.generate())
KEYS = trusted_keys([SIGNER.public_key])
DAY_US = 86_400 * 1_000_000
YEAR_US = 365 * DAY_US
START_US = parse_time("2022-01-10T09:00:00Z")


def append_at(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, time_us: int,
              first: int, count: int) -> None:
    """Append ``count`` records whose times and checkpoints fall at ``time_us``."""
    monkeypatch.setattr("enclave.audit.store.now_us", lambda: time_us)
    for index in range(first, first + count):
        event = RequestOpened(f"req-{index}", Principal("alice"), "/v1/chat/completions",
                              "smollm2", "hello")
        store.append([open_record(event, excerpt_chars=50, digest_only=False,
                                  time_us=time_us)])


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SQLiteStore:
    """35 records from January 2022 (checkpoints at seq 1, 11, 21, 31) and 15 from two years
    later (checkpoints at 36 and 46)."""
    store = SQLiteStore(tmp_path / "audit.db", StoreOptions(
        signer=SIGNER, checkpoint_interval=10, checkpoint_max_age_s=30 * 86_400))
    store.migrate()
    append_at(store, monkeypatch, START_US, 0, 35)
    append_at(store, monkeypatch, START_US + 2 * YEAR_US, 35, 15)
    monkeypatch.undo()
    return store


@pytest.mark.parametrize(("now", "months", "expected"), [
    ("2025-03-31T10:00:00Z", 1, "2025-02-28T10:00:00Z"),
    ("2024-03-31T10:00:00Z", 1, "2024-02-29T10:00:00Z"),
    ("2028-02-29T00:00:00.5Z", 36, "2025-02-28T00:00:00.5Z"),
    ("2025-01-15T12:00:00Z", 13, "2023-12-15T12:00:00Z"),
])
def test_retention_cutoff_in_calendar_months(now: str, months: int, expected: str) -> None:
    assert retention_cutoff_us(months, parse_time(now)) == parse_time(expected)


def test_nothing_to_purge_within_retention(store: SQLiteStore) -> None:
    assert plan_purge(store, KEYS, 36, START_US + 2 * YEAR_US) is None


def test_purge_cuts_at_last_expired_checkpoint(store: SQLiteStore) -> None:
    later = START_US + 36 * 31 * DAY_US  # the first segment is past 36 months, not the second

    plan = plan_purge(store, KEYS, 36, later)
    assert plan is not None
    deleted = purge_expired(store, KEYS, plan)

    assert plan.cut.seq == 31
    assert deleted == 31
    assert store.count() == 19
    assert store.anchor() is not None
    with store.snapshot():
        report = verify_chain(store, KEYS)
    assert report.ok, report.breaks
    assert report.start == "purge anchor"
    assert report.start_seq == 31
    assert report.records_checked == 19


def test_second_purge_continues_from_anchor(store: SQLiteStore) -> None:
    first = plan_purge(store, KEYS, 36, START_US + 36 * 31 * DAY_US)
    assert first is not None
    purge_expired(store, KEYS, first)

    second = plan_purge(store, KEYS, 36, START_US + 6 * YEAR_US)
    assert second is not None
    purge_expired(store, KEYS, second)

    assert second.cut.seq == 46
    assert store.count() == 4
    with store.snapshot():
        assert verify_chain(store, KEYS).ok


def test_purge_refused_when_chain_broken(store: SQLiteStore, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "audit.db") as connection:
        connection.execute("DELETE FROM audit_records WHERE seq = 5")
    plan = plan_purge(store, KEYS, 36, START_US + 36 * 31 * DAY_US)
    assert plan is not None

    with pytest.raises(AuditError, match="deleted at seq 5"):
        purge_expired(store, KEYS, plan)
    assert store.count() == 49


def test_purge_before_retention_flagged(store: SQLiteStore) -> None:
    # The purge runs with a clock 40 years ahead, but the anchor records the real time of
    # the purge. Under a 40-year retention, the checkpoints of 2022 and 2024 had not expired
    # at that real time, so verification flags the purge as premature.
    plan = plan_purge(store, KEYS, 36, now_us() + 40 * YEAR_US)
    assert plan is not None
    purge_expired(store, KEYS, plan)

    with store.snapshot():
        report = verify_chain(store, KEYS, retention_months=40 * 12)

    assert [item.kind for item in report.breaks] == [BreakKind.EARLY_PURGE]
    assert report.breaks[0].last_seq == 46
