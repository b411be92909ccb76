"""The key store in PostgreSQL, for several replicas that share one set of keys."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from enclave.access.store import SCHEMA, KeyExistsError, KeyStore, KeyStoreError
from enclave.errors import reason

CONNECT_TIMEOUT_S = 5


class PostgresKeyStore(KeyStore):
    """Keys in the ``enclave_api_keys`` table; one connection, reopened once after a failure."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self._url = url
        info = psycopg.conninfo.conninfo_to_dict(url)
        self.description = f"PostgreSQL {info.get('host', 'localhost')}/{info.get('dbname', '')}"
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        with self._lock:
            try:
                self._connect().execute(SCHEMA)
            except (pg_errors.UniqueViolation, pg_errors.DuplicateTable):
                pass  # another replica created the table at the same moment
            except psycopg.Error as exc:
                raise KeyStoreError(
                    f"Cannot create the key table at {self.description}: {reason(exc)}."
                ) from None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(self._url, autocommit=True,
                                                   connect_timeout=CONNECT_TIMEOUT_S)
            except psycopg.Error as exc:
                raise KeyStoreError(
                    f"Cannot connect to the key store at {self.description}: {reason(exc)}. "
                    "Check access.store_url and that the server is running."
                ) from None
        return self._connection

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            for attempt in (1, 2):
                connection = self._connect()
                try:
                    cursor = connection.execute(sql, params)
                    return cursor.fetchall() if cursor.description else []
                except pg_errors.UniqueViolation as exc:
                    raise KeyExistsError(f"A key with this prefix already exists ({exc}).") \
                        from None
                except psycopg.OperationalError as exc:
                    # A dropped connection is reopened once; a second failure is reported.
                    connection.close()
                    if attempt == 2:
                        raise KeyStoreError(
                            f"The key store at {self.description} failed: {reason(exc)}."
                        ) from None
                except psycopg.Error as exc:
                    raise KeyStoreError(
                        f"The key store at {self.description} failed: {reason(exc)}."
                    ) from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
