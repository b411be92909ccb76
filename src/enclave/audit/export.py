"""Exports of the chain for a regulator or a SIEM: JSONL (verifiable) and CSV (flat).

Every JSONL line is an object with a ``type``:

- ``record``: ``seq``, ``prev_hash``, ``hash`` and the ``record`` object. The canonical JSON
  of ``record`` (sorted keys, no whitespace, UTF-8) is the text that the hash covers.
- ``checkpoint``: ``seq``, ``hash``, ``time_us``, ``key_id`` and ``signature``.
- ``anchor``: the checkpoint at which the last purge cut the chain, plus ``purged_at_us``.
- ``head``: the chain head, written only when the export covers the whole chain.
- ``start``: the ``seq`` and ``hash`` before the first exported record, written only when a
  time range leaves earlier records out.

``enclave audit verify --export FILE --public-key KEY.pem`` checks such a file with nothing
but the public key.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from enclave.audit.chain import ChainRow, Head, canonical_json, search_columns
from enclave.audit.errors import AuditError
from enclave.audit.records import format_time
from enclave.audit.signing import Checkpoint
from enclave.audit.store import Anchor, AuditStore

CSV_COLUMNS = (
    "seq", "kind", "time", "request_id", "user_id", "key_prefix", "client", "route", "model",
    "privacy_profile", "query_excerpt", "query_sha256", "query_chars", "pii", "status",
    "error_code", "response_chars", "prompt_tokens", "completion_tokens", "latency_ms",
    "spooled", "prev_hash", "hash",
)


def _checkpoint_fields(checkpoint: Checkpoint) -> dict[str, Any]:
    return {"seq": checkpoint.seq, "hash": checkpoint.hash, "time_us": checkpoint.time_us,
            "time": format_time(checkpoint.time_us), "key_id": checkpoint.key_id,
            "signature": checkpoint.signature}


def write_jsonl(store: AuditStore, out: TextIO, since_us: int | None = None,
                until_us: int | None = None) -> int:
    """Write the records in the time range, with the checkpoints that cover them; return
    the number of records written. Call inside ``store.snapshot()`` for a consistent export."""
    whole_chain = since_us is None and until_us is None
    anchor = store.anchor()
    if anchor is not None:
        out.write(json.dumps({"type": "anchor", **_checkpoint_fields(anchor.checkpoint),
                              "purged_at_us": anchor.purged_at_us}) + "\n")
    count = 0
    first_seq = last_seq = 0
    for row in store.rows(since_us=since_us, until_us=until_us):
        if count == 0 and not whole_chain:
            out.write(json.dumps({"type": "start", "seq": row.seq - 1,
                                  "hash": row.prev_hash}) + "\n")
            first_seq = row.seq
        line = {"type": "record", "seq": row.seq, "prev_hash": row.prev_hash,
                "hash": row.hash, "record": json.loads(row.record)}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        count += 1
        last_seq = row.seq
    for checkpoint in store.checkpoints():
        if whole_chain or first_seq <= checkpoint.seq <= last_seq:
            out.write(json.dumps({"type": "checkpoint", **_checkpoint_fields(checkpoint)}) + "\n")
    if whole_chain:
        head = store.head()
        out.write(json.dumps({"type": "head", "seq": head.seq, "hash": head.hash}) + "\n")
    return count


def csv_row(row: ChainRow) -> dict[str, Any]:
    """Flatten a stored row into the CSV columns; PII counts become KIND=COUNT;KIND=COUNT."""
    record = json.loads(row.record)
    flat = {column: record.get(column) for column in CSV_COLUMNS}
    flat.update(seq=row.seq, prev_hash=row.prev_hash, hash=row.hash)
    pii = record.get("pii") or {}
    flat["pii"] = ";".join(f"{kind}={count}" for kind, count in sorted(pii.items()))
    return flat


def write_csv(store: AuditStore, out: TextIO, since_us: int | None = None,
              until_us: int | None = None) -> int:
    """Write one CSV line per record in the time range; return the number written."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    count = 0
    for row in store.rows(since_us=since_us, until_us=until_us):
        writer.writerow(csv_row(row))
        count += 1
    return count


class ExportFile:
    """Chain source that reads a JSONL export back for verification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: list[ChainRow] = []
        self._checkpoints: list[Checkpoint] = []
        self._anchor: Anchor | None = None
        self._head: Head | None = None
        self.start: Head | None = None
        self._load()

    def _load(self) -> None:
        try:
            handle = self.path.open(encoding="utf-8")
        except OSError as exc:
            raise AuditError(f"Cannot read the export {self.path}: {exc.strerror}.") from None
        with handle:
            for number, line in enumerate(handle, start=1):
                try:
                    self._add(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise AuditError(
                        f"Line {number} of {self.path} is not a valid export line ({exc}); "
                        "export again with `enclave audit export`.") from None

    def _add(self, line: dict[str, Any]) -> None:
        kind = line["type"]
        if kind == "record":
            self._rows.append(_row_from_export(line))
        elif kind == "checkpoint":
            self._checkpoints.append(_checkpoint_from_export(line))
        elif kind == "anchor":
            self._anchor = Anchor(_checkpoint_from_export(line), int(line["purged_at_us"]))
        elif kind == "head":
            self._head = Head(int(line["seq"]), str(line["hash"]))
        elif kind == "start":
            self.start = Head(int(line["seq"]), str(line["hash"]))

    def head(self) -> Head | None:
        return self._head

    def anchor(self) -> Anchor | None:
        return self._anchor

    def checkpoints(self) -> list[Checkpoint]:
        return sorted(self._checkpoints, key=lambda checkpoint: checkpoint.seq)

    def rows(self, after_seq: int = 0) -> Iterator[ChainRow]:
        return (row for row in self._rows if row.seq > after_seq)


def _checkpoint_from_export(line: dict[str, Any]) -> Checkpoint:
    return Checkpoint(int(line["seq"]), str(line["hash"]), int(line["time_us"]),
                      str(line["key_id"]), str(line["signature"]))


def _row_from_export(line: dict[str, Any]) -> ChainRow:
    record = line["record"]
    try:
        columns = search_columns(record)
    except (KeyError, TypeError, ValueError):
        # Verification reports such a record as edited: it checks the same fields.
        columns = ("", 0, "", None, None, None, None)
    return ChainRow(int(line["seq"]), *columns, canonical_json(record), str(line["prev_hash"]),
                    str(line["hash"]))
