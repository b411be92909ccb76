"""The shared audit store for several replicas: a PostgreSQL database.

Writers in any number of processes serialize on the row lock of ``audit_head`` and so keep
one chain. Migrations serialize on a transaction-level advisory lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from enclave.audit.chain import ChainRow
from enclave.audit.migrations import POSTGRES_MIGRATIONS
from enclave.audit.store import AuditStore, StoreOptions

# Any fixed 64-bit number works as long as nothing else in the database uses it.
_MIGRATION_LOCK_ID = 0x656E636C61766531  # "enclave1" in ASCII

_COPY_ROWS = (
    "COPY audit_records (seq, kind, time_us, request_id, user_id, model, status, error_code, "
    "record, prev_hash, hash) FROM STDIN"
)


def redact_url(url: str) -> str:
    """Return the URL with its password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(AuditStore):
    """The chain in a PostgreSQL database reached by URL (psycopg 3)."""

    placeholder = "%s"
    migrations = POSTGRES_MIGRATIONS
    driver_errors = (psycopg.Error,)

    def __init__(self, url: str, options: StoreOptions) -> None:
        super().__init__(options)
        self.url = url

    @property
    def description(self) -> str:
        return redact_url(self.url)

    def _connect(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(self.url, autocommit=True,
                                     connect_timeout=max(1, round(self.options.timeout_s)),
                                     application_name="enclave-audit")
        # A writer that cannot get the head lock in time fails instead of blocking forever.
        connection.execute(f"SET lock_timeout = {int(self.options.timeout_s * 1000)}")
        return connection

    def _lost_connection(self, error: BaseException | None) -> bool:
        # SQLSTATE classes 08 (connection exception) and 57P (server shutdown, backend
        # terminated); no SQLSTATE at all means the client found the socket closed.
        if not isinstance(error, psycopg.OperationalError):
            return False
        state = error.sqlstate
        return state is None or state.startswith(("08", "57P"))

    def _head_query(self) -> str:
        return super()._head_query() + " FOR UPDATE"

    def _begin_write(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute("BEGIN")

    def _begin_read(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _begin_migration(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute("BEGIN")
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_ID,))

    def _insert_rows(self, connection: psycopg.Connection[Any], rows: Sequence[ChainRow]) -> None:
        with connection.cursor() as cursor, cursor.copy(_COPY_ROWS) as copy:
            for row in rows:
                copy.write_row(row)
