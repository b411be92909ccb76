"""Verification of a chain: find every edited, deleted, inserted or reordered record.

The walk starts at the anchor left by the last purge, or else at the genesis. For each
stored row it checks four things: the record still matches its hash, the search columns
still match the record, the row links to the row before it, and the row sits at the
sequence number it was sealed with. Signed checkpoints catch the one change the chain alone
cannot: records rewritten together with every hash after them. Breaks are reported by
stored sequence number and kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.chain import GENESIS, ChainRow, Head, link_hash, search_columns
from enclave.audit.records import format_time
from enclave.audit.signing import Checkpoint, SignatureCheck, check_signature
from enclave.audit.store import Anchor, AuditStore

# Hashes of the most recent rows, so a broken link can be traced to the row it skips to.
_RECENT_HASHES = 4096
RANGE_NOTE = "(first of the range)"
_DECODER = json.JSONDecoder()
_COLUMN_NAMES = ("kind", "time_us", "request_id", "user_id", "model", "status", "error_code")


class BreakKind(StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    CHECKPOINT_MISMATCH = "checkpoint-mismatch"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_KEY = "unknown-key"
    TRUNCATED = "truncated"
    EARLY_PURGE = "early-purge"


@dataclass(frozen=True, slots=True)
class Break:
    """One place where the chain is not what was written: stored sequence numbers
    ``first_seq`` to ``last_seq`` and what is wrong there.

    ``template`` is an English message with ``str.format`` placeholders filled from
    ``values``, so that the CLI can translate it.
    """

    kind: BreakKind
    first_seq: int
    last_seq: int
    template: str
    values: dict[str, Any] = field(default_factory=dict)
    merged: bool = False  # several neighbouring breaks; the detail is the first one's

    @property
    def detail(self) -> str:
        text = self.template.format(**self.values)
        return f"{text} {RANGE_NOTE}" if self.merged else text

    def span(self) -> str:
        if self.first_seq == self.last_seq:
            return f"seq {self.first_seq}"
        return f"seq {self.first_seq}-{self.last_seq}"


@dataclass(slots=True)
class VerifyReport:
    start: str
    start_seq: int
    records_checked: int = 0
    last_seq: int = 0
    checkpoints_checked: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


class ChainSource(Protocol):
    """Source of a chain to verify: a store, or a JSONL export."""

    def head(self) -> Head | None: ...

    def anchor(self) -> Anchor | None: ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def rows(self, after_seq: int = 0) -> Iterator[ChainRow]: ...


@dataclass(slots=True)
class _Pending:
    """A row sealed with a higher number than expected: a renumbered deletion if the next row
    continues from it, else part of a reordering."""

    seq: int
    sealed: int
    hash: str
    missing_from: int


class _Walker:
    """Checks rows one by one; keeps what the next row must link to."""

    def __init__(self, start: Head, checkpoints: dict[int, Checkpoint]) -> None:
        self.breaks: list[Break] = []
        self.last_seq = start.seq
        self.last_sealed = start.seq
        self.last_hash = start.hash
        self.allowed_shift = 0
        self.checkpoints = checkpoints
        self.last_good_checkpoint = start.seq
        self.reordered: set[int] = set()
        # The hashes of the last _RECENT_HASHES rows, in a dict for lookups. The ring
        # contains the same hashes in order, so it tells which one to drop next.
        self.recent: dict[str, int] = {}
        self.recent_ring: list[str | None] = [None] * _RECENT_HASHES
        self.pending: _Pending | None = None
        self.count = 0

    def add(self, kind: BreakKind, first_seq: int, last_seq: int, template: str,
            **values: Any) -> None:
        self.breaks.append(Break(kind, first_seq, last_seq, template, values))

    def check(self, row: ChainRow) -> None:
        self.count += 1
        record = _parse(row.record)
        sealed = record.get("seq") if record is not None else None
        if record is None or not isinstance(sealed, int):
            self.add(BreakKind.EDITED, row.seq, row.seq, "the record is not valid record JSON")
            self._advance(row, self.last_sealed + 1)
            return

        content_ok = link_hash(row.prev_hash, row.record) == row.hash
        if not content_ok:
            self.add(BreakKind.EDITED, row.seq, row.seq, "the record does not match its hash")
        else:
            self._check_columns(row, record)
        self._resolve_pending(row)
        explained = self._check_link(row, sealed, content_ok)
        if not explained and row.seq - sealed != self.allowed_shift:
            self.reordered.add(row.seq)
            self.add(BreakKind.REORDERED, row.seq, row.seq,
                     "the record sealed as seq {sealed} is stored at seq {seq}",
                     sealed=sealed, seq=row.seq)
        self._check_checkpoint(row)
        self._advance(row, sealed)

    def _check_columns(self, row: ChainRow, record: dict[str, Any]) -> None:
        try:
            expected = search_columns(record)
        except (KeyError, TypeError, ValueError):
            self.add(BreakKind.EDITED, row.seq, row.seq, "the record lacks a required field")
            return
        stored = (row.kind, row.time_us, row.request_id, row.user_id, row.model, row.status,
                  row.error_code)
        if expected == stored:
            return
        for name, want, have in zip(_COLUMN_NAMES, expected, stored, strict=True):
            if want != have:
                self.add(BreakKind.EDITED, row.seq, row.seq,
                         "column {column} is {stored} but the record says {expected}",
                         column=name, stored=repr(have), expected=repr(want))

    def _check_link(self, row: ChainRow, sealed: int, content_ok: bool) -> bool:
        """Classify a broken link; return whether the row's position is explained by it."""
        if row.prev_hash == self.last_hash and row.seq == self.last_seq + 1:
            return False
        if row.seq > self.last_seq + 1:
            self.add(BreakKind.DELETED, self.last_seq + 1, row.seq - 1,
                     "these sequence numbers are missing")
            return False
        if row.prev_hash == self.last_hash:
            return False
        linked = self.recent.get(row.prev_hash)
        if linked is not None and linked < self.last_seq:
            skipped = range(linked + 1, row.seq)
            if any(seq in self.reordered for seq in skipped):
                return False  # the other half of a swap; the position check reports it
            self.add(BreakKind.INSERTED, skipped[0], skipped[-1],
                     "seq {seq} links to seq {linked}, so the records between do not belong "
                     "to the chain", seq=row.seq, linked=linked)
            self.allowed_shift += len(skipped)
            return True
        if sealed > self.last_sealed + 1 and content_ok:
            self.pending = _Pending(row.seq, sealed, row.hash, self.last_sealed + 1)
            return True
        if content_ok:
            self.add(BreakKind.EDITED, self.last_seq, row.seq,
                     "seq {seq} does not link to seq {previous}: that record was changed and "
                     "re-hashed, or seq {seq} was forged", seq=row.seq, previous=self.last_seq)
        return False

    def _resolve_pending(self, row: ChainRow | None) -> None:
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if row is None or row.prev_hash == pending.hash:
            first, last = pending.missing_from, pending.sealed - 1
            if first == last:
                self.add(BreakKind.DELETED, pending.seq, pending.seq,
                         "the record sealed as seq {first} is missing and the rows after it "
                         "were renumbered", first=first)
            else:
                self.add(BreakKind.DELETED, pending.seq, pending.seq,
                         "the records sealed as seq {first}-{last} are missing and the rows "
                         "after them were renumbered", first=first, last=last)
            self.allowed_shift -= pending.sealed - pending.missing_from
            return
        self.reordered.add(pending.seq)
        self.add(BreakKind.REORDERED, pending.seq, pending.seq,
                 "the record sealed as seq {sealed} is stored at seq {seq}",
                 sealed=pending.sealed, seq=pending.seq)

    def _check_checkpoint(self, row: ChainRow) -> None:
        checkpoint = self.checkpoints.get(row.seq)
        if checkpoint is None:
            return
        if checkpoint.hash != row.hash:
            self.add(BreakKind.CHECKPOINT_MISMATCH, self.last_good_checkpoint + 1, row.seq,
                     "the checkpoint signed at seq {seq} does not match the stored chain, so "
                     "records up to it were rewritten", seq=row.seq)
        self.last_good_checkpoint = row.seq

    def _advance(self, row: ChainRow, sealed: int) -> None:
        self.last_seq = row.seq
        self.last_sealed = max(self.last_sealed, sealed)
        self.last_hash = row.hash
        slot = self.count % _RECENT_HASHES
        forgotten = self.recent_ring[slot]
        if forgotten is not None:
            self.recent.pop(forgotten, None)
        self.recent_ring[slot] = row.hash
        self.recent[row.hash] = row.seq

    def finish(self) -> None:
        self._resolve_pending(None)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        value = _DECODER.decode(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check_signatures(
    checkpoints: Iterable[Checkpoint], keys: dict[str, Ed25519PublicKey], report: VerifyReport
) -> dict[int, Checkpoint]:
    """Add a break for every checkpoint whose signature fails; return the valid ones by seq."""
    valid: dict[int, Checkpoint] = {}
    for checkpoint in checkpoints:
        report.checkpoints_checked += 1
        result = check_signature(checkpoint, keys)
        if result is SignatureCheck.VALID:
            valid[checkpoint.seq] = checkpoint
        elif result is SignatureCheck.UNKNOWN_KEY:
            report.breaks.append(Break(
                BreakKind.UNKNOWN_KEY, checkpoint.seq, checkpoint.seq,
                "the checkpoint is signed by key {key_id}, which is not trusted; pass its "
                "public key with --public-key", {"key_id": checkpoint.key_id}))
        else:
            report.breaks.append(Break(BreakKind.BAD_SIGNATURE, checkpoint.seq, checkpoint.seq,
                                       "the checkpoint signature is invalid"))
    return valid


def _check_anchor(anchor: Anchor, keys: dict[str, Ed25519PublicKey], retention_months: int | None,
                  report: VerifyReport) -> None:
    checkpoint = anchor.checkpoint
    result = check_signature(checkpoint, keys)
    if result is not SignatureCheck.VALID:
        kind = (BreakKind.UNKNOWN_KEY if result is SignatureCheck.UNKNOWN_KEY
                else BreakKind.BAD_SIGNATURE)
        report.breaks.append(Break(kind, checkpoint.seq, checkpoint.seq,
                                   "the anchor left by the last purge is not validly signed"))
    if retention_months is None:
        return
    from enclave.audit.retention import retention_cutoff_us

    if checkpoint.time_us > retention_cutoff_us(retention_months, anchor.purged_at_us):
        report.breaks.append(Break(
            BreakKind.EARLY_PURGE, 1, checkpoint.seq,
            "records up to seq {seq} were removed although their checkpoint of {time} was "
            "younger than the retention of {months} months",
            {"seq": checkpoint.seq, "time": format_time(checkpoint.time_us),
             "months": retention_months}))


def verify_chain(
    source: ChainSource,
    keys: dict[str, Ed25519PublicKey],
    *,
    retention_months: int | None = None,
    start: Head | None = None,
    start_label: str = "checkpoint",
) -> VerifyReport:
    """Walk the chain and report every break.

    The walk starts after ``start`` when given (a checkpoint the caller has checked, or the
    first row of a partial export), else after the purge anchor, else at the genesis.
    ``retention_months`` enables the check that the last purge respected the retention.
    """
    anchor = source.anchor() if start is None else None
    if anchor is not None:
        start, start_label = Head(anchor.checkpoint.seq, anchor.checkpoint.hash), "purge anchor"
    elif start is None:
        start, start_label = GENESIS, "genesis"
    report = VerifyReport(start=start_label, start_seq=start.seq, last_seq=start.seq)
    if anchor is not None:
        _check_anchor(anchor, keys, retention_months, report)

    checkpoints = [cp for cp in source.checkpoints() if cp.seq > start.seq]
    valid = _check_signatures(checkpoints, keys, report)
    walker = _Walker(start, valid)
    for row in source.rows(after_seq=start.seq):
        walker.check(row)
    walker.finish()
    report.records_checked = walker.count
    report.last_seq = walker.last_seq
    report.breaks.extend(walker.breaks)
    _check_tail(source.head(), checkpoints, walker, report)
    report.breaks = merge_breaks(report.breaks)
    return report


def _check_tail(head: Head | None, checkpoints: list[Checkpoint], walker: _Walker,
                report: VerifyReport) -> None:
    """Report rows missing at the end, or rows appended after the head."""
    last_seq = walker.last_seq
    beyond = max((cp.seq for cp in checkpoints), default=0)
    if head is not None:
        beyond = max(beyond, head.seq)
        if head.seq < last_seq:
            report.breaks.append(Break(
                BreakKind.INSERTED, head.seq + 1, last_seq,
                "these records follow the chain head (seq {head}), so they were added outside "
                "the audit trail", {"head": head.seq}))
        elif head.seq == last_seq and head.hash != walker.last_hash:
            report.breaks.append(Break(BreakKind.EDITED, last_seq, last_seq,
                                       "the last record does not match the chain head"))
    if beyond > last_seq:
        report.breaks.append(Break(
            BreakKind.TRUNCATED, last_seq + 1, beyond,
            "the chain head or a checkpoint reaches seq {beyond}, but the last stored record "
            "is seq {last}", {"beyond": beyond, "last": last_seq}))


def merge_breaks(breaks: list[Break]) -> list[Break]:
    """Sort breaks by position and merge neighbours of the same kind into one range."""
    merged: list[Break] = []
    for item in sorted(breaks, key=lambda b: (b.first_seq, b.last_seq, b.kind)):
        previous = merged[-1] if merged else None
        if (previous is not None and previous.kind == item.kind
                and item.first_seq <= previous.last_seq + 1):
            merged[-1] = Break(previous.kind, previous.first_seq,
                               max(previous.last_seq, item.last_seq), previous.template,
                               previous.values, merged=True)
            continue
        merged.append(item)
    return merged


def latest_valid_checkpoint(
    store: AuditStore, keys: dict[str, Ed25519PublicKey]
) -> Checkpoint | None:
    """Return the newest checkpoint that is validly signed and matches its stored row.

    Verification that starts there skips the rows before it, so it is fast but trusts them.
    """
    for checkpoint in reversed(store.checkpoints()):
        if check_signature(checkpoint, keys) is not SignatureCheck.VALID:
            continue
        row = store.row(checkpoint.seq)
        if row is not None and row.hash == checkpoint.hash and (
                link_hash(row.prev_hash, row.record) == row.hash):
            return checkpoint
    return None

