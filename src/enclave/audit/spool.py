"""The spool: records that could not be committed under the fail-open policy.

Spooled records stay in memory until the store accepts them again, and are also appended to
a JSONL side file so that a restart does not lose them. Only the writer thread uses a spool.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from enclave.audit.records import Record

logger = logging.getLogger(__name__)


class Spool:
    """At most ``max_records`` records in memory (the oldest are dropped, and logged, beyond
    that) plus the side file at ``path``."""

    def __init__(self, path: Path, max_records: int) -> None:
        self.path = path
        self.max_records = max_records
        self._records: deque[Record] = deque()
        self.dropped = 0
        self._dropped_since_clear = 0

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Sequence[Record]) -> int:
        """Keep the records for a later retry; return how many older ones were dropped."""
        self._write_file(records)
        self._records.extend(records)
        dropped = 0
        while len(self._records) > self.max_records:
            self._records.popleft()
            dropped += 1
        if dropped:
            logger.error("Audit spool full (%d records): dropped the %d oldest from memory. "
                         "They remain only in %s, which the next start imports",
                         self.max_records, dropped, self.path)
        self.dropped += dropped
        self._dropped_since_clear += dropped
        return dropped

    def restore(self, records: Sequence[Record]) -> None:
        """Keep records loaded from the side file in memory, without writing them again."""
        self._records.extend(records)

    def take(self, limit: int) -> list[Record]:
        """Remove and return up to ``limit`` of the oldest records."""
        oldest: list[Record] = []
        while self._records and len(oldest) < limit:
            oldest.append(self._records.popleft())
        return oldest

    def put_back(self, records: Sequence[Record]) -> None:
        """Return records taken by ``take`` that could not be written, oldest first."""
        self._records.extendleft(reversed(records))

    def load_file(self) -> list[Record]:
        """Return the records of the side file, left by this or an earlier process."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records: list[Record] = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                logger.error("Skipped line %d of the audit spool %s: not valid JSON (probably "
                             "cut off by a crash)", number, self.path)
        return records

    def clear_file(self) -> None:
        """Remove the side file once every record in it has been committed."""
        if self._dropped_since_clear:
            logger.warning("Kept the audit spool %s: %d records in it were dropped from "
                           "memory and will be imported at the next start",
                           self.path, self._dropped_since_clear)
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            logger.error("Could not remove the audit spool %s: %s", self.path, exc)

    def _write_file(self, records: Sequence[Record]) -> None:
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            logger.error("Could not write %d audit records to the spool %s: %s; they are kept "
                         "in memory only", len(records), self.path, exc)
