"""The embedded audit store: one SQLite database file in WAL mode."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from enclave.audit.chain import ChainRow
from enclave.audit.migrations import SQLITE_MIGRATIONS
from enclave.audit.store import AuditStore, StoreOptions


class SQLiteStore(AuditStore):
    """The chain in a SQLite file. Other processes may read it while this one writes.

    In WAL mode, ``synchronous=NORMAL`` makes a commit survive a crash of the process but
    not a power loss. ``FULL`` adds an fsync per commit (see ``audit.sqlite_synchronous``).
    """

    migrations = SQLITE_MIGRATIONS
    driver_errors = (sqlite3.Error,)

    def __init__(self, path: Path, options: StoreOptions) -> None:
        super().__init__(options)
        self.path = path

    @property
    def description(self) -> str:
        return f"sqlite://{self.path}"

    def _connect(self) -> sqlite3.Connection:
        self._create_private_file()
        connection = sqlite3.connect(self.path, timeout=self.options.timeout_s,
                                     isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous()}")
        return connection

    def _synchronous(self) -> str:
        value = self.options.sqlite_synchronous.upper()
        if value not in ("NORMAL", "FULL"):
            raise ValueError(f"sqlite_synchronous must be normal or full, not {value!r}")
        return value

    def _create_private_file(self) -> None:
        # Records hold personal data, so the database is readable by its owner only; SQLite
        # gives its -wal and -shm files the same mode as the database file.
        if self.path.exists():
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def _begin_write(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def _begin_read(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN")

    def _begin_migration(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def _insert_rows(self, connection: sqlite3.Connection, rows: Sequence[ChainRow]) -> None:
        connection.executemany(
            "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
