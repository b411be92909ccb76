"""The writer thread: group commit of audit records.

Callers queue a record and wait on a future. The thread takes everything queued so far (up
to ``batch_max_records``), commits it in one transaction and only then resolves the futures,
so an acknowledged record is durable and a burst of requests shares one commit.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from enclave.audit.errors import AuditError
from enclave.audit.records import Record
from enclave.audit.spool import Spool
from enclave.audit.store import AuditStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditCounters:
    """Counters of the audit trail; ``snapshot()`` reads them all at once."""

    records_written: int = 0
    write_failures: int = 0
    write_timeouts: int = 0
    records_spooled: int = 0
    records_replayed: int = 0
    records_dropped: int = 0
    verify_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "records_written": self.records_written,
                "write_failures": self.write_failures,
                "write_timeouts": self.write_timeouts,
                "records_spooled": self.records_spooled,
                "records_replayed": self.records_replayed,
                "records_dropped": self.records_dropped,
                "verify_failures": self.verify_failures,
            }


@dataclass(slots=True)
class _Item:
    record: Record
    future: Future[int]


_STOP = None


class GroupCommitWriter:
    """Owns one store and commits queued records from a single daemon thread.

    With a spool (the fail-open policy), records of a failed commit go to the spool and are
    written again after the next successful commit. Without one, the failure is only
    reported to their callers.
    """

    def __init__(
        self,
        store: AuditStore,
        counters: AuditCounters,
        *,
        spool: Spool | None,
        batch_max_records: int = 512,
        idle_checkpoint_s: float = 60.0,
    ) -> None:
        self._store = store
        self._counters = counters
        self._spool = spool
        self._batch_max = batch_max_records
        self._idle_s = idle_checkpoint_s
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._migrated = False
        self._dirty = False
        self._thread = threading.Thread(target=self._run, name="enclave-audit-writer",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def spooled(self) -> int:
        """Return the number of records waiting in the spool."""
        return len(self._spool) if self._spool is not None else 0

    def submit(self, record: Record) -> Future[int]:
        """Queue a record; the future resolves to its sequence number once committed, or to
        the AuditError that prevented the commit."""
        future: Future[int] = Future()
        self._queue.put(_Item(record, future))
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Commit what is queued, sign a last checkpoint and stop the thread."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("The audit writer did not stop within %.0f s; records still queued "
                         "may be lost", timeout_s)

    def _run(self) -> None:
        self._import_spool_file()
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                self._commit_guarded(batch)
            elif not stopping:
                self._replay_spool()
                self._checkpoint_when_idle()
        self._replay_spool()
        self._checkpoint_when_idle()
        self._store.close()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        try:
            first = self._queue.get(timeout=self._idle_s)
        except queue.Empty:
            return [], False
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < self._batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit_guarded(self, batch: list[_Item]) -> None:
        """Commit a batch; an unexpected error fails only this batch, not the thread."""
        try:
            self._commit(batch)
        except Exception as exc:  # a bug must not leave every later caller waiting
            logger.exception("The audit writer failed on a batch of %d records", len(batch))
            self._counters.add("write_failures", len(batch))
            error = AuditError(f"internal error of the audit writer: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)

    def _commit(self, batch: list[_Item]) -> None:
        for item in batch:
            # From here on a caller's timeout can no longer cancel the future.
            item.future.set_running_or_notify_cancel()
        records = [item.record for item in batch]
        try:
            seqs = self._append(records)
        except AuditError as exc:
            self._fail(records, exc)
            for item in batch:
                if not item.future.cancelled():
                    item.future.set_exception(exc)
            return
        for item, seq in zip(batch, seqs, strict=True):
            if not item.future.cancelled():
                item.future.set_result(seq)
        self._replay_spool()

    def _append(self, records: list[Record]) -> list[int]:
        if not self._migrated:
            self._store.migrate()
            self._migrated = True
        seqs = self._store.append(records)
        self._counters.add("records_written", len(records))
        self._dirty = True
        return seqs

    def _fail(self, records: list[Record], error: AuditError) -> None:
        self._counters.add("write_failures", len(records))
        if self._spool is None:
            logger.error("Could not commit %d audit records: %s", len(records), error)
            return
        for record in records:
            record["spooled"] = True
        dropped = self._spool.add(records)
        self._counters.add("records_spooled", len(records))
        self._counters.add("records_dropped", dropped)
        logger.error("Could not commit %d audit records, spooled them for a retry "
                     "(%d spooled): %s", len(records), len(self._spool), error)

    def _replay_spool(self) -> None:
        if self._spool is None or not len(self._spool):
            return
        while len(self._spool):
            records = self._spool.take(self._batch_max)
            try:
                self._append(records)
            except AuditError as exc:
                self._spool.put_back(records)
                logger.warning("Replaying %d spooled audit records failed: %s", len(records), exc)
                return
            self._counters.add("records_replayed", len(records))
            logger.info("Committed %d spooled audit records", len(records))
        self._spool.clear_file()

    def _import_spool_file(self) -> None:
        """Commit the records a previous process left in the spool file."""
        if self._spool is None:
            return
        loaded = self._spool.load_file()
        if not loaded:
            return
        try:
            if not self._migrated:
                self._store.migrate()
                self._migrated = True
            missing = [record for record in loaded if not self._store.has_record(
                str(record.get("request_id")), str(record.get("kind")))]
        except AuditError as exc:
            logger.warning("Could not import the audit spool %s yet: %s",
                           self._spool.path, exc)
            self._spool.restore(loaded)
            return
        self._spool.restore(missing)
        logger.info("Importing %d audit records from the spool %s (%d were already stored)",
                    len(missing), self._spool.path, len(loaded) - len(missing))
        self._replay_spool()

    def _checkpoint_when_idle(self) -> None:
        if not self._dirty:
            return
        try:
            self._store.checkpoint()
        except AuditError as exc:
            logger.warning("Could not write an audit checkpoint: %s", exc)
            return
        self._dirty = False
