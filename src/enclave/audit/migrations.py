"""Ordered, named schema migrations of the audit store, tracked in ``audit_migrations``.

A migration is applied once, in its own transaction together with the row that marks it
applied. Names never change once released; a schema change is a new migration at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from enclave.audit.chain import GENESIS_HASH


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    statements: tuple[str, ...]


CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS audit_migrations ("
    "name TEXT PRIMARY KEY, applied_at_us BIGINT NOT NULL)"
)

_RECORD_COLUMNS = """
    kind TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    user_id TEXT,
    model TEXT,
    status INTEGER,
    error_code TEXT,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
"""

# audit_head is the single row that writers lock to serialize appends. It also stores the
# last checkpoint, so that a writer can tell when the next one is due.
_COMMON_TABLES = (
    "CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, "
    "hash TEXT NOT NULL, checkpoint_seq BIGINT NOT NULL, checkpoint_time_us BIGINT NOT NULL)",
    f"INSERT INTO audit_head VALUES (1, 0, '{GENESIS_HASH}', 0, 0)",
    "CREATE TABLE audit_checkpoints (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, "
    "time_us BIGINT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL)",
    "CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, "
    "hash TEXT NOT NULL, time_us BIGINT NOT NULL, key_id TEXT NOT NULL, "
    "signature TEXT NOT NULL, purged_at_us BIGINT NOT NULL)",
)

_SEARCH_INDEXES = (
    "CREATE INDEX audit_records_time ON audit_records (time_us)",
    "CREATE INDEX audit_records_user ON audit_records (user_id, time_us)",
    "CREATE INDEX audit_records_request ON audit_records (request_id, kind)",
)

# In SQLite an INTEGER PRIMARY KEY is the rowid itself, which keeps the table ordered by seq
# without a second index; BIGINT would not be.
SQLITE_MIGRATIONS = (
    Migration("m001_chain", (
        f"CREATE TABLE audit_records (seq INTEGER PRIMARY KEY, {_RECORD_COLUMNS})",
        *_COMMON_TABLES,
    )),
    Migration("m002_search_indexes", _SEARCH_INDEXES),
)

POSTGRES_MIGRATIONS = (
    Migration("m001_chain", (
        f"CREATE TABLE audit_records (seq BIGINT PRIMARY KEY, {_RECORD_COLUMNS})",
        *_COMMON_TABLES,
    )),
    Migration("m002_search_indexes", _SEARCH_INDEXES),
)
