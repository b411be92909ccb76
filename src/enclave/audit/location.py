"""File locations of the audit trail, and the function that opens a store from its URL."""

from __future__ import annotations

from pathlib import Path

from enclave.audit.errors import AuditError
from enclave.audit.settings import AuditSettings
from enclave.audit.store import AuditStore, StoreOptions


def audit_dir(data_dir: Path) -> Path:
    return data_dir / "audit"


def store_url(settings: AuditSettings, data_dir: Path) -> str:
    """Return the configured store URL, or the default SQLite file under ``data_dir``."""
    if settings.store_url:
        return settings.store_url
    return f"sqlite://{(audit_dir(data_dir) / 'audit.db').resolve()}"


def signing_key_path(settings: AuditSettings, data_dir: Path) -> Path:
    return settings.signing_key or audit_dir(data_dir) / "signing-key.pem"


def spool_path(data_dir: Path) -> Path:
    """Return the side file of records that could not be written under fail-open."""
    return audit_dir(data_dir) / "spool.jsonl"


def create_store(url: str, options: StoreOptions) -> AuditStore:
    """Return a store for ``url`` without connecting; the first use connects."""
    if url.startswith("sqlite:///"):
        from enclave.audit.sqlite_store import SQLiteStore

        # sqlite:///var/lib/x.db names /var/lib/x.db: the path starts at the third slash.
        return SQLiteStore(Path(url.removeprefix("sqlite://")), options)
    if url.startswith(("postgresql://", "postgres://")):
        from enclave.audit.postgres_store import PostgresStore

        return PostgresStore(url, options)
    raise AuditError(f"Unsupported audit store URL scheme in {url.split(':', 1)[0]}:...; use "
                     "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB.")


def open_existing_store(url: str, options: StoreOptions | None = None) -> AuditStore:
    """Open a store for reading and apply pending migrations.

    A missing SQLite file raises AuditError, so that a wrong path does not silently verify an
    empty chain.
    """
    store = create_store(url, options or StoreOptions())
    path = getattr(store, "path", None)
    if isinstance(path, Path) and not path.exists():
        raise AuditError(f"No audit store at {path}. Check audit.store_url and data_dir, or "
                         "run `enclave audit init`.")
    store.migrate()
    return store
