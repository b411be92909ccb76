"""The hash chain: canonical JSON, record hashes and chained rows.

Each stored row carries a sequence number and ``hash = SHA-256(prev_hash || record_json)``,
where ``prev_hash`` is the 32-byte hash of the row before it (32 zero bytes before the first
row), ``record_json`` is the UTF-8 canonical JSON of the record, and ``||`` concatenates
bytes. Hashes are stored as lowercase hex. The record itself contains its sequence number,
so a row cannot be moved to another place in the chain without changing its hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from enclave.audit.records import Record, parse_time

GENESIS_HASH = "00" * 32


@dataclass(frozen=True, slots=True)
class Head:
    """The last row of the chain (sequence 0 and the genesis hash for an empty chain)."""

    seq: int
    hash: str


GENESIS = Head(0, GENESIS_HASH)


class ChainRow(NamedTuple):
    """One stored record with its chain fields and the columns copied out for searching.

    The search columns (kind to error_code) repeat values of ``record``; verification checks
    that they still agree with it. A named tuple, because verification builds a million of
    them and the database drivers take and return plain tuples.
    """

    seq: int
    kind: str
    time_us: int
    request_id: str
    user_id: str | None
    model: str | None
    status: int | None
    error_code: str | None
    record: str
    prev_hash: str
    hash: str


# One encoder for every record: building a JSONEncoder per call costs more than encoding.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                      allow_nan=False)


def canonical_json(record: Mapping[str, Any]) -> str:
    """Serialize a record as canonical JSON: sorted keys, no whitespace, UTF-8 text."""
    return _CANONICAL_ENCODER.encode(record)


def link_hash(prev_hash: str, record_json: str) -> str:
    """Return the hex SHA-256 of the previous hash's bytes followed by the record's JSON."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + record_json.encode("utf-8")).hexdigest()


def search_columns(
    record: Mapping[str, Any],
) -> tuple[str, int, str, str | None, str | None, int | None, str | None]:
    """Return the search columns of a record: kind, time_us, request_id, user_id, model,
    status and error_code."""
    return (
        record["kind"],
        parse_time(record["time"]),
        record["request_id"],
        record.get("user_id"),
        record.get("model"),
        record.get("status"),
        record.get("error_code"),
    )


def seal(records: Sequence[Record], head: Head) -> list[ChainRow]:
    """Number the records after ``head`` and chain their hashes; the records are not changed."""
    rows: list[ChainRow] = []
    prev_hash = head.hash
    for offset, record in enumerate(records, start=1):
        seq = head.seq + offset
        record_json = canonical_json({**record, "seq": seq})
        row_hash = link_hash(prev_hash, record_json)
        rows.append(ChainRow(seq, *search_columns(record), record_json, prev_hash, row_hash))
        prev_hash = row_hash
    return rows
