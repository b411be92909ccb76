"""Storage of the chain: what the SQLite and PostgreSQL stores share.

Appends are serialized by a write transaction that first locks the single ``audit_head``
row (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``), so writers in
several processes still extend one chain. The same transaction inserts the rows, moves the
head and, when one is due, adds a signed checkpoint; nothing is acknowledged before it
commits.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from enclave.audit.chain import GENESIS, ChainRow, Head, seal
from enclave.audit.errors import AuditError
from enclave.audit.migrations import CREATE_MIGRATIONS_TABLE, Migration
from enclave.audit.records import Record, now_us
from enclave.audit.signing import Checkpoint, CheckpointSigner

logger = logging.getLogger(__name__)

ROW_COLUMNS = ("seq, kind, time_us, request_id, user_id, model, status, error_code, record, "
               "prev_hash, hash")
_PAGE_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Write options of a store: the checkpoint signer and interval, and the lock timeout."""

    signer: CheckpointSigner | None = None
    checkpoint_interval: int = 1000
    checkpoint_max_age_s: float = 60.0
    timeout_s: float = 5.0
    sqlite_synchronous: str = "normal"


@dataclass(frozen=True, slots=True)
class Anchor:
    """The checkpoint at which purged records ended; verification starts after it."""

    checkpoint: Checkpoint
    purged_at_us: int


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Conditions on requests; ``status`` is an HTTP status, an error code or "interrupted"."""

    user_id: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    model: str | None = None
    status: str | None = None
    limit: int | None = 1000


@dataclass(frozen=True, slots=True)
class RequestRecords:
    """The open record of a request and its close record, if any."""

    open_seq: int
    open_record: str
    close_seq: int | None
    close_record: str | None


class StoreWriteError(AuditError):
    """A write transaction failed; nothing of it was committed."""


class AuditStore(ABC):
    """A chain of audit records in a SQL database.

    One store object uses one connection and is not thread-safe: the trail's writer thread
    owns the store it writes with, and readers open their own.
    """

    placeholder = "?"
    migrations: tuple[Migration, ...] = ()
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self, options: StoreOptions) -> None:
        self.options = options
        self._connection: Any = None

    @property
    @abstractmethod
    def description(self) -> str:
        """Return the location of the store, without any password."""

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _begin_write(self, connection: Any) -> None:
        """Start a transaction that holds the write lock of the chain."""

    @abstractmethod
    def _begin_read(self, connection: Any) -> None:
        """Start a read-only transaction that reads from one consistent snapshot."""

    @abstractmethod
    def _begin_migration(self, connection: Any) -> None:
        """Start a transaction that no other process can migrate in at the same time."""

    @abstractmethod
    def _insert_rows(self, connection: Any, rows: Sequence[ChainRow]) -> None: ...

    # Connection handling

    def connection(self) -> Any:
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def reset(self) -> None:
        """Drop the connection after a failure; the next call opens a new one."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.close()
        except self.driver_errors as exc:
            logger.debug("Closing the audit store connection failed: %s", exc)

    def close(self) -> None:
        self.reset()

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection().execute(self._sql(sql), params)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        connection = self.connection()
        if write:
            self._begin_write(connection)
        else:
            self._begin_read(connection)
        try:
            yield connection
        except BaseException:
            self._rollback(connection)
            raise
        connection.execute("COMMIT")

    def _rollback(self, connection: Any) -> None:
        try:
            connection.execute("ROLLBACK")
        except self.driver_errors as exc:
            logger.debug("Rollback of the audit store failed: %s", exc)
            self.reset()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read everything inside the block from one consistent snapshot."""
        with self._transaction(write=False):
            yield

    # Schema

    def migrate(self) -> list[str]:
        """Apply the migrations not applied yet, in order; return their names."""
        applied: list[str] = []
        try:
            done = self._applied_migrations()
            for migration in self.migrations:
                if migration.name not in done and self._apply(migration):
                    applied.append(migration.name)
        except self.driver_errors as exc:
            self.reset()
            raise AuditError(f"Cannot prepare the audit store {self.description}: {exc}") from None
        for name in applied:
            logger.info("Applied audit store migration %s to %s", name, self.description)
        return applied

    def _applied_migrations(self) -> set[str]:
        """Return the names of applied migrations, read without taking the write lock."""
        connection = self.connection()
        self._begin_read(connection)
        try:
            rows = connection.execute("SELECT name FROM audit_migrations").fetchall()
        except self.driver_errors:
            self._rollback(connection)
            return set()  # no migrations table yet
        connection.execute("COMMIT")
        return {str(row[0]) for row in rows}

    def _apply(self, migration: Migration) -> bool:
        connection = self.connection()
        self._begin_migration(connection)
        try:
            connection.execute(CREATE_MIGRATIONS_TABLE)
            done = self._execute("SELECT 1 FROM audit_migrations WHERE name = ?",
                                 (migration.name,)).fetchone()
            if not done:
                for statement in migration.statements:
                    connection.execute(statement)
                self._execute("INSERT INTO audit_migrations VALUES (?, ?)",
                              (migration.name, now_us()))
        except BaseException:
            self._rollback(connection)
            raise
        connection.execute("COMMIT")
        return not done

    # Writing

    def append(self, records: Sequence[Record]) -> list[int]:
        """Chain and commit the records in one transaction; return their sequence numbers.

        A connection that the server closed since its last use is replaced and the
        transaction tried once more. Raises StoreWriteError if it fails; then nothing of it
        was written.
        """
        if not records:
            return []
        reused = self._connection is not None
        try:
            return self._append_once(records)
        except StoreWriteError as exc:
            if not (reused and self._lost_connection(exc.__cause__)):
                raise
            logger.warning("The audit store connection was lost (%s); reconnecting",
                           exc.__cause__)
        return self._append_once(records)

    def _append_once(self, records: Sequence[Record]) -> list[int]:
        try:
            with self._transaction(write=True):
                head, checkpoint_seq, checkpoint_time_us = self._locked_head()
                rows = seal(records, head)
                self._insert_rows(self.connection(), rows)
                new_head = Head(rows[-1].seq, rows[-1].hash)
                checkpoint = self._due_checkpoint(new_head, checkpoint_seq, checkpoint_time_us)
                self._move_head(new_head, checkpoint)
        except self.driver_errors as exc:
            self.reset()
            raise StoreWriteError(f"writing to {self.description} failed: {exc}") from exc
        return [row.seq for row in rows]

    def _lost_connection(self, error: BaseException | None) -> bool:
        """Return whether ``error`` means the server closed the connection."""
        return False

    def checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint at the head now, unless the head already has one."""
        try:
            with self._transaction(write=True):
                head, checkpoint_seq, _ = self._locked_head()
                if self.options.signer is None or head.seq == checkpoint_seq:
                    return None
                checkpoint = self.options.signer.sign(head.seq, head.hash, now_us())
                self._move_head(head, checkpoint)
                return checkpoint
        except self.driver_errors as exc:
            self.reset()
            raise StoreWriteError(f"writing to {self.description} failed: {exc}") from exc

    def _locked_head(self) -> tuple[Head, int, int]:
        row = self._execute(self._head_query()).fetchone()
        if row is None:
            raise AuditError(f"The audit store {self.description} has no head row; it was "
                             "damaged. Run `enclave audit verify` to see what is missing.")
        return Head(int(row[0]), str(row[1])), int(row[2]), int(row[3])

    def _head_query(self) -> str:
        return ("SELECT seq, hash, checkpoint_seq, checkpoint_time_us FROM audit_head "
                "WHERE id = 1")

    def _due_checkpoint(
        self, head: Head, checkpoint_seq: int, checkpoint_time_us: int
    ) -> Checkpoint | None:
        signer = self.options.signer
        if signer is None:
            return None
        time_us = now_us()
        max_age_us = int(self.options.checkpoint_max_age_s * 1_000_000)
        if (head.seq - checkpoint_seq >= self.options.checkpoint_interval
                or time_us - checkpoint_time_us >= max_age_us):
            return signer.sign(head.seq, head.hash, time_us)
        return None

    def _move_head(self, head: Head, checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            self._execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1",
                          (head.seq, head.hash))
            return
        self._execute(
            "INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?)",
            (checkpoint.seq, checkpoint.hash, checkpoint.time_us, checkpoint.key_id,
             checkpoint.signature),
        )
        self._execute(
            "UPDATE audit_head SET seq = ?, hash = ?, checkpoint_seq = ?, "
            "checkpoint_time_us = ? WHERE id = 1",
            (head.seq, head.hash, checkpoint.seq, checkpoint.time_us),
        )

    def purge(self, anchor: Checkpoint) -> int:
        """Delete the records up to the anchor checkpoint and the checkpoints before it, and
        store the anchor; return the number of records deleted."""
        try:
            with self._transaction(write=True):
                deleted = self._execute("DELETE FROM audit_records WHERE seq <= ?",
                                        (anchor.seq,)).rowcount
                self._execute("DELETE FROM audit_checkpoints WHERE seq < ?", (anchor.seq,))
                self._execute("DELETE FROM audit_anchor WHERE id = 1")
                self._execute(
                    "INSERT INTO audit_anchor VALUES (1, ?, ?, ?, ?, ?, ?)",
                    (anchor.seq, anchor.hash, anchor.time_us, anchor.key_id, anchor.signature,
                     now_us()),
                )
        except self.driver_errors as exc:
            self.reset()
            raise StoreWriteError(f"purging {self.description} failed: {exc}") from exc
        return int(deleted)

    # Reading

    def head(self) -> Head:
        row = self._execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return Head(int(row[0]), str(row[1])) if row else GENESIS

    def anchor(self) -> Anchor | None:
        row = self._execute(
            "SELECT seq, hash, time_us, key_id, signature, purged_at_us FROM audit_anchor "
            "WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        return Anchor(Checkpoint(int(row[0]), row[1], int(row[2]), row[3], row[4]), int(row[5]))

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._execute(
            "SELECT seq, hash, time_us, key_id, signature FROM audit_checkpoints ORDER BY seq"
        ).fetchall()
        return [Checkpoint(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]

    def rows(self, after_seq: int = 0, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[ChainRow]:
        """Yield the stored rows in sequence order, a page at a time."""
        conditions = "seq > ?"
        bounds: list[Any] = []
        if since_us is not None:
            conditions += " AND time_us >= ?"
            bounds.append(since_us)
        if until_us is not None:
            conditions += " AND time_us < ?"
            bounds.append(until_us)
        sql = f"SELECT {ROW_COLUMNS} FROM audit_records WHERE {conditions} ORDER BY seq LIMIT ?"
        last = after_seq
        while True:
            page = self._execute(sql, (last, *bounds, _PAGE_ROWS)).fetchall()
            for row in page:
                yield ChainRow(*row)
            if len(page) < _PAGE_ROWS:
                return
            last = page[-1][0]

    def row(self, seq: int) -> ChainRow | None:
        found = self._execute(f"SELECT {ROW_COLUMNS} FROM audit_records WHERE seq = ?",
                              (seq,)).fetchone()
        return ChainRow(*found) if found else None

    def count(self, up_to_seq: int | None = None) -> int:
        if up_to_seq is None:
            return int(self._execute("SELECT COUNT(*) FROM audit_records").fetchone()[0])
        return int(self._execute("SELECT COUNT(*) FROM audit_records WHERE seq <= ?",
                                 (up_to_seq,)).fetchone()[0])

    def has_record(self, request_id: str, kind: str) -> bool:
        """Return whether the request's record of this kind is stored; raise AuditError if
        the store cannot be read."""
        try:
            row = self._execute(
                "SELECT 1 FROM audit_records WHERE request_id = ? AND kind = ? LIMIT 1",
                (request_id, kind),
            ).fetchone()
        except self.driver_errors as exc:
            self.reset()
            raise AuditError(f"Reading {self.description} failed: {exc}") from exc
        return row is not None

    def search(self, query: SearchFilter) -> list[RequestRecords]:
        """Return the requests that match, oldest first, with their open and close records."""
        conditions = ["o.kind = 'open'"]
        params: list[Any] = []
        for column, value in (("o.user_id", query.user_id), ("o.model", query.model)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if query.since_us is not None:
            conditions.append("o.time_us >= ?")
            params.append(query.since_us)
        if query.until_us is not None:
            conditions.append("o.time_us < ?")
            params.append(query.until_us)
        if query.status == "interrupted":
            conditions.append("c.seq IS NULL")
        elif query.status is not None and query.status.isdigit():
            conditions.append("c.status = ?")
            params.append(int(query.status))
        elif query.status is not None:
            conditions.append("c.error_code = ?")
            params.append(query.status)
        sql = (
            "SELECT o.seq, o.record, c.seq, c.record FROM audit_records o "
            "LEFT JOIN audit_records c ON c.request_id = o.request_id AND c.kind = 'close' "
            f"WHERE {' AND '.join(conditions)} ORDER BY o.seq"
        )
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [RequestRecords(*row) for row in self._execute(sql, params).fetchall()]
