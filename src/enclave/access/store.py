"""Key stores: SQLite under the data directory by default, PostgreSQL for several replicas.

Both keep one table, ``enclave_api_keys``, with the columns of ``KeyRecord``; the model
patterns are a JSON array. Every method is blocking; the server calls them in a worker thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enclave.access.keys import KeyRecord, Role
from enclave.access.settings import AccessSettings
from enclave.errors import EnclaveError, reason

TABLE = "enclave_api_keys"
_COLUMNS = (
    "prefix", "salt", "digest", "user_id", "name", "role", "models", "requests_per_minute",
    "tokens_per_minute", "created_at", "expires_at", "revoked_at",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    prefix TEXT PRIMARY KEY,
    salt TEXT NOT NULL,
    digest TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    models TEXT NOT NULL,
    requests_per_minute INTEGER,
    tokens_per_minute INTEGER,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
)
"""


class KeyStoreError(EnclaveError):
    """The key store cannot be opened, read or written."""


class KeyExistsError(KeyStoreError):
    """A key with the same prefix is already stored."""


class KeyStore(ABC):
    """Stores key records; a subclass supplies the connection and the placeholder style."""

    placeholder = "?"
    description = ""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows; raise KeyStoreError when the store fails."""

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def add(self, record: KeyRecord) -> None:
        """Insert a new key; raise KeyExistsError if its prefix is taken."""
        values = [getattr(record, column) for column in _COLUMNS]
        values[_COLUMNS.index("models")] = json.dumps(list(record.models))
        marks = ", ".join("?" for _ in _COLUMNS)
        self._execute(self._sql(f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({marks})"),
                      values)

    def get(self, prefix: str) -> KeyRecord | None:
        rows = self._execute(
            self._sql(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE prefix = ?"), [prefix])
        return _record(rows[0]) if rows else None

    def records(self) -> list[KeyRecord]:
        """Return every key, revoked and expired ones included, oldest first."""
        rows = self._execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} ORDER BY created_at")
        return [_record(row) for row in rows]

    def has_keys(self) -> bool:
        """Return whether any key was ever created (revoked and expired ones count)."""
        return bool(self._execute(f"SELECT 1 FROM {TABLE} LIMIT 1"))

    def revoke(self, prefix: str, at: float) -> bool:
        """Mark a key revoked at ``at`` unless it already was; return whether it exists."""
        self._execute(self._sql(
            f"UPDATE {TABLE} SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL"),
            [at, prefix])
        return self.get(prefix) is not None

    def expire(self, prefix: str, at: float) -> None:
        """Bring a key's expiry forward to ``at``; a later expiry is never extended."""
        self._execute(self._sql(
            f"UPDATE {TABLE} SET expires_at = ? WHERE prefix = ? "
            "AND (expires_at IS NULL OR expires_at > ?)"), [at, prefix, at])


def _record(row: tuple[Any, ...]) -> KeyRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    role: Role = "admin" if values.pop("role") == "admin" else "user"
    models = tuple(str(item) for item in json.loads(values.pop("models")))
    return KeyRecord(role=role, models=models, **values)


class SqliteKeyStore(KeyStore):
    """Keys in one SQLite file, created with mode 0600 in a folder with mode 0700."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"SQLite {path}"
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            # The server reads from worker threads; the lock serialises them.
            self._connection = sqlite3.connect(path, timeout=5.0, check_same_thread=False,
                                               isolation_level=None)
            self._connection.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(
                f"Cannot open the key store {path}: {reason(exc)}. Check that the folder "
                "exists and that this user may write to it."
            ) from None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection.execute(sql, params).fetchall()
            except sqlite3.IntegrityError as exc:
                raise KeyExistsError(f"A key with this prefix already exists ({exc}).") from None
            except sqlite3.Error as exc:
                raise KeyStoreError(f"The key store {self.path} failed: {reason(exc)}.") from None

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def default_store_path(data_dir: Path) -> Path:
    return data_dir / "access" / "keys.db"


def open_key_store(settings: AccessSettings, data_dir: Path) -> KeyStore:
    """Open the store that ``access.store_url`` names, or the default SQLite file."""
    url = settings.store_url
    if url is None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SqliteKeyStore(default_store_path(data_dir))
    if url.startswith("sqlite:///"):
        return SqliteKeyStore(Path(url.removeprefix("sqlite://")))
    from enclave.access.store_postgres import PostgresKeyStore

    return PostgresKeyStore(url)
