"""The audit trail: what the request path calls to record requests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from enclave.audit.errors import AuditError, AuditUnavailableError
from enclave.audit.location import create_store, signing_key_path, spool_path, store_url
from enclave.audit.records import (
    Record,
    RequestClosed,
    RequestOpened,
    close_record,
    now_us,
    open_record,
)
from enclave.audit.settings import AuditSettings
from enclave.audit.signing import CheckpointSigner, load_or_create_signing_key, trusted_keys
from enclave.audit.spool import Spool
from enclave.audit.store import AuditStore, StoreOptions
from enclave.audit.verify import VerifyReport, verify_chain
from enclave.audit.writer import AuditCounters, GroupCommitWriter

logger = logging.getLogger(__name__)


class AppendStatus(StrEnum):
    COMMITTED = "committed"
    SPOOLED = "spooled"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of one append: committed at ``seq``, spooled after a failed commit
    (fail-open), or still pending when the wait timed out (fail-open)."""

    status: AppendStatus
    seq: int | None = None


def _discard_outcome(waiter: asyncio.Future[int]) -> None:
    if not waiter.cancelled():
        waiter.exception()


class AuditTrail:
    """Records requests in the hash-chained store through a group-commit writer thread.

    Thread-safe: any number of threads and event loops may record at once.
    """

    def __init__(self, settings: AuditSettings, data_dir: Path) -> None:
        self.settings = settings
        self.url = store_url(settings, data_dir)
        self.counters = AuditCounters()
        self.signer = CheckpointSigner(
            load_or_create_signing_key(signing_key_path(settings, data_dir)))
        options = StoreOptions(
            signer=self.signer,
            checkpoint_interval=settings.checkpoint_interval,
            checkpoint_max_age_s=settings.checkpoint_max_age_s,
            # Lock waits end well before the caller's wait, so that a caller normally learns
            # that the commit failed rather than only that it timed out.
            timeout_s=settings.write_timeout_s / 2,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        store = create_store(self.url, options)
        self._check_store(store)
        fail_open = settings.failure_policy == "fail-open"
        spool = Spool(spool_path(data_dir), settings.spool_max_records) if fail_open else None
        self._writer = GroupCommitWriter(store, self.counters, spool=spool,
                                         idle_checkpoint_s=settings.checkpoint_max_age_s)
        self._writer.start()
        logger.info("Audit trail writing to %s (%s, checkpoint key %s)", store.description,
                    settings.failure_policy, self.signer.key_id)

    def _check_store(self, store: AuditStore) -> None:
        """Apply migrations now, so that a broken store stops start-up under fail-closed."""
        try:
            store.migrate()
        except AuditError as exc:
            if self.settings.failure_policy == "fail-closed":
                raise
            logger.error("The audit store cannot be prepared (%s); requests are served and "
                         "their records spooled until it can", exc)
        finally:
            store.reset()

    # Recording

    def open_request(self, event: RequestOpened) -> AppendResult:
        """Record an accepted request before generation starts; block until committed.

        Raises AuditUnavailableError under fail-closed when the record cannot be committed
        within ``write_timeout_s``; the caller must then reject the request (HTTP 503).
        """
        return self._wait(self._writer.submit(self._open_record(event)))

    def complete_request(self, event: RequestClosed) -> AppendResult:
        """Record the outcome of a request opened with ``open_request``; block until committed.

        Raises AuditUnavailableError like ``open_request``.
        """
        return self._wait(self._writer.submit(close_record(event, time_us=now_us())))

    async def open_request_async(self, event: RequestOpened) -> AppendResult:
        """Like ``open_request``, but waits without blocking the event loop."""
        return await self._wait_async(self._writer.submit(self._open_record(event)))

    async def complete_request_async(self, event: RequestClosed) -> AppendResult:
        """Like ``complete_request``, but waits without blocking the event loop."""
        return await self._wait_async(self._writer.submit(close_record(event, time_us=now_us())))

    def _open_record(self, event: RequestOpened) -> Record:
        return open_record(event, excerpt_chars=self.settings.excerpt_chars,
                           digest_only=self.settings.digest_only, time_us=now_us())

    def _wait(self, future: concurrent.futures.Future[int]) -> AppendResult:
        try:
            seq = future.result(self.settings.write_timeout_s)
        except concurrent.futures.TimeoutError:
            return self._timed_out()
        except AuditError as exc:
            return self._failed(exc)
        return AppendResult(AppendStatus.COMMITTED, seq)

    async def _wait_async(self, future: concurrent.futures.Future[int]) -> AppendResult:
        waiter = asyncio.wrap_future(future)
        try:
            seq = await asyncio.wait_for(asyncio.shield(waiter), self.settings.write_timeout_s)
        except TimeoutError:
            # Nobody awaits the waiter any more: retrieve its outcome so that asyncio does
            # not log a late failure as an unretrieved exception.
            waiter.add_done_callback(_discard_outcome)
            return self._timed_out()
        except AuditError as exc:
            return self._failed(exc)
        return AppendResult(AppendStatus.COMMITTED, seq)

    def _timed_out(self) -> AppendResult:
        self.counters.add("write_timeouts")
        timeout = self.settings.write_timeout_s
        if self.settings.failure_policy == "fail-closed":
            # NOTE: the record stays queued and may still be committed after this error.
            raise AuditUnavailableError(f"no commit within {timeout:g} s")
        logger.warning("An audit record was not committed within %g s; serving anyway "
                       "(fail-open), the record stays queued", timeout)
        return AppendResult(AppendStatus.PENDING)

    def _failed(self, error: AuditError) -> AppendResult:
        if self.settings.failure_policy == "fail-closed":
            raise AuditUnavailableError("the audit store cannot be written") from error
        return AppendResult(AppendStatus.SPOOLED)

    # Maintenance

    def verify(self) -> VerifyReport:
        """Verify the whole chain through a separate connection; count a failure if broken."""
        store = create_store(self.url, StoreOptions(timeout_s=self.settings.write_timeout_s))
        try:
            with store.snapshot():
                report = verify_chain(store, trusted_keys([self.signer.public_key]),
                                      retention_months=self.settings.retention_months)
        finally:
            store.close()
        if not report.ok:
            self.counters.add("verify_failures")
            logger.error("Audit chain verification found %d breaks; the first: %s at %s",
                         len(report.breaks), report.breaks[0].kind, report.breaks[0].span())
        return report

    def stats(self) -> dict[str, int]:
        """Return the figures for metrics: counters end in ``_total``; ``spooled_records`` is
        the number of records waiting in the spool now."""
        figures = {f"{name}_total": value for name, value in self.counters.snapshot().items()}
        figures["spooled_records"] = self._writer.spooled()
        return figures

    def close(self) -> None:
        """Commit queued records, sign a final checkpoint and stop the writer."""
        self._writer.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
