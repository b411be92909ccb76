"""Rate-limit buckets in PostgreSQL, shared by every replica that uses the same database.

One row per bucket in the unlogged table ``enclave_rate_limits``. Taking a request is a single
``INSERT … ON CONFLICT DO UPDATE … WHERE`` statement, which locks the row, so two replicas
cannot both take the last request of a minute. Times come from the database clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from enclave.access.limits import (
    WINDOW_S,
    Denial,
    RateLimiter,
    RateLimitStoreError,
    bucket_name,
    interval_s,
)

CONNECT_TIMEOUT_S = 5
TABLE = "enclave_rate_limits"
_NOW = "extract(epoch FROM statement_timestamp())::float8"
# UNLOGGED: no write-ahead log, so an update does not wait for a disk flush. PostgreSQL
# empties the table after a crash, which only refills every bucket.
_SCHEMA = f"CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (bucket TEXT PRIMARY KEY, " \
          "tat DOUBLE PRECISION NOT NULL)"
_TOKENS_AHEAD = f"SELECT tat - {_NOW} FROM {TABLE} WHERE bucket = %(bucket)s"
_TAKE_REQUEST = f"""
INSERT INTO {TABLE} AS bucket (bucket, tat) VALUES (%(bucket)s, {_NOW} + %(interval)s)
ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(bucket.tat, {_NOW}) + %(interval)s
WHERE GREATEST(bucket.tat, {_NOW}) + %(interval)s - {_NOW} <= %(window)s
RETURNING tat
"""
_REQUEST_WAIT = f"""
SELECT GREATEST(tat, {_NOW}) + %(interval)s - {_NOW} - %(window)s FROM {TABLE}
WHERE bucket = %(bucket)s
"""
_CHARGE = f"""
INSERT INTO {TABLE} AS bucket (bucket, tat) VALUES (%(bucket)s, {_NOW} + %(seconds)s)
ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(bucket.tat, {_NOW}) + %(seconds)s
"""


class PostgresRateLimiter(RateLimiter):
    """One connection per replica, opened on first use and reopened once after a failure."""

    def __init__(self, url: str) -> None:
        self._url = url
        info = psycopg.conninfo.conninfo_to_dict(url)
        self.description = f"PostgreSQL {info.get('host', 'localhost')}/{info.get('dbname', '')}"
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            connection = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            # Another replica may create the table at the same moment.
            with contextlib.suppress(pg_errors.UniqueViolation, pg_errors.DuplicateTable):
                await connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            for attempt in (1, 2):
                try:
                    connection = await self._connect()
                    cursor = await connection.execute(sql, params)
                    return await cursor.fetchall() if cursor.description else []
                except psycopg.OperationalError as exc:
                    # A dropped connection is reopened once; a second failure is reported.
                    if self._connection is not None:
                        await self._connection.close()
                    if attempt == 2:
                        raise RateLimitStoreError(f"{self.description} failed: {exc}") from None
                except psycopg.Error as exc:
                    raise RateLimitStoreError(f"{self.description} failed: {exc}") from None
            raise AssertionError("unreachable")

    async def admit(self, prefix: str, requests_per_minute: int | None,
                    tokens_per_minute: int | None) -> Denial | None:
        if tokens_per_minute is not None:
            rows = await self._rows(_TOKENS_AHEAD, {"bucket": bucket_name(prefix, "tokens")})
            if rows and rows[0][0] >= WINDOW_S:
                return Denial("tokens", rows[0][0] - WINDOW_S)
        if requests_per_minute is not None:
            params = {"bucket": bucket_name(prefix, "requests"),
                      "interval": interval_s(requests_per_minute), "window": WINDOW_S}
            if not await self._rows(_TAKE_REQUEST, params):
                rows = await self._rows(_REQUEST_WAIT, params)
                return Denial("requests", max(rows[0][0], 0.0) if rows else 1.0)
        return None

    async def charge_tokens(self, prefix: str, tokens: int, tokens_per_minute: int) -> None:
        await self._rows(_CHARGE, {"bucket": bucket_name(prefix, "tokens"),
                                   "seconds": interval_s(tokens_per_minute) * tokens})

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
