"""Key format, hashing, scopes, the SQLite and PostgreSQL stores, and key management."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.access import manage
from enclave.access.keys import (
    ANONYMOUS,
    KeyRecord,
    Principal,
    generate_key,
    key_digest,
    parse_key,
    parse_prefix,
)
from enclave.access.settings import AccessSettings
from enclave.access.store import KeyExistsError, KeyStore, SqliteKeyStore, open_key_store
from enclave.access.store_postgres import PostgresKeyStore
from tests.access_stores import scratch_postgres


def test_key_format_round_trip() -> None:
    key, parts = generate_key()
    assert key.startswith(f"sk-enc-{parts.prefix}-")
    assert len(parts.prefix) == 12
    assert len(parts.secret) == 43  # 32 random bytes in URL-safe base64
    assert parse_key(key) == parts
    assert parse_key(f"  {key}\n") == parts


@pytest.mark.parametrize("text", [
    "", "sk-enc-", "sk-123", "Bearer sk-enc-0123456789ab-" + "a" * 43,
    "sk-enc-0123456789AB-" + "a" * 43, "sk-enc-0123456789ab-" + "a" * 42,
    "sk-enc-0123456789ab-" + "a" * 43 + "!",
])
def test_parse_key_rejects_malformed(text: str) -> None:
    assert parse_key(text) is None


def test_parse_prefix_accepts_each_form() -> None:
    key, parts = generate_key()
    for text in (parts.prefix, f"sk-enc-{parts.prefix}", key):
        assert parse_prefix(text) == parts.prefix
    assert parse_prefix("alice") is None


def test_digest_matches_only_its_secret() -> None:
    key, parts = generate_key()
    salt = "00" * 16
    record = KeyRecord(prefix=parts.prefix, salt=salt, user_id="alice",
                       digest=key_digest(salt, parts.prefix, parts.secret))
    assert record.matches(parts.secret)
    assert not record.matches(parts.secret[:-1] + ("A" if parts.secret[-1] != "A" else "B"))
    assert parts.secret not in record.digest
    # The same secret under another salt gives another digest.
    assert key_digest("11" * 16, parts.prefix, parts.secret) != record.digest


@pytest.mark.parametrize(("patterns", "model", "allowed"), [
    (("*",), "anything", True),
    (("SmolLM2-*",), "SmolLM2-135M-Instruct.Q4_1", True),
    (("SmolLM2-*",), "qwen2.5-7b", False),
    (("qwen2.5-7b",), "qwen2.5-7b:latest", True),
    (("qwen2.5-7b",), "qwen2.5-7b:q8", False),
    (("a", "b"), "b", True),
    (("smollm2-*",), "SmolLM2-135M", False),  # case-sensitive, like model ids
])
def test_principal_model_scope(patterns: tuple[str, ...], model: str, allowed: bool) -> None:
    principal = Principal(user_id="u", key_prefix="0" * 12, models=patterns)
    assert principal.may_use(model) is allowed


def test_anonymous_principal_may_use_every_model() -> None:
    assert ANONYMOUS.key_prefix is None
    assert ANONYMOUS.may_use("any-model")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        opened: KeyStore = SqliteKeyStore(tmp_path / "data" / "access" / "keys.db")
        yield opened
        opened.close()
        return
    with scratch_postgres() as url:
        opened = PostgresKeyStore(url)
        yield opened
        opened.close()


def test_store_add_get_and_list(store: KeyStore) -> None:
    assert not store.has_keys()
    issued = manage.create_key(store, manage.KeySpec(
        user_id="alice", name="Alice 张", models=("SmolLM2-*", "qwen*"),
        requests_per_minute=60, tokens_per_minute=1000))

    record = store.get(issued.record.prefix)
    assert record == issued.record
    assert store.has_keys()
    assert [item.prefix for item in store.records()] == [issued.record.prefix]
    assert store.get("0" * 12) is None


def test_store_rejects_duplicate_prefix(store: KeyStore) -> None:
    issued = manage.create_key(store, manage.KeySpec(user_id="alice"))
    with pytest.raises(KeyExistsError):
        store.add(issued.record)


def test_store_revoke_and_expire(store: KeyStore) -> None:
    now = time.time()
    first = manage.create_key(store, manage.KeySpec(user_id="alice"), now).record
    second = manage.create_key(store, manage.KeySpec(user_id="bob"), now).record

    manage.revoke_key(store, f"sk-enc-{first.prefix}", now + 1)
    store.expire(second.prefix, now + 100)
    store.expire(second.prefix, now + 200)  # a later expiry never extends the key

    revoked = store.get(first.prefix)
    expiring = store.get(second.prefix)
    assert revoked is not None and revoked.status(now + 2) == "revoked"
    assert expiring is not None and expiring.expires_at == pytest.approx(now + 100)
    assert expiring.status(now + 99) == "active"
    assert expiring.status(now + 100) == "expired"


def test_store_keeps_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SqliteKeyStore(path)
    issued = manage.create_key(store, manage.KeySpec(user_id="alice"))
    store.close()
    secret = issued.key.rsplit("-", 1)[1]
    assert secret.encode() not in path.read_bytes()


def test_default_store_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = open_key_store(AccessSettings(), data_dir)
    store.close()
    path = data_dir / "access" / "keys.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize(("spec", "param"), [
    (manage.KeySpec(user_id=""), "user_id"),
    (manage.KeySpec(user_id="has space"), "user_id"),
    (manage.KeySpec(user_id="alice", name="line\nbreak"), "name"),
    (manage.KeySpec(user_id="alice", models=()), "models"),
    (manage.KeySpec(user_id="alice", models=("two words",)), "models"),
    (manage.KeySpec(user_id="alice", requests_per_minute=0), "requests_per_minute"),
    (manage.KeySpec(user_id="alice", tokens_per_minute=-5), "tokens_per_minute"),
    (manage.KeySpec(user_id="alice", expires_at=1.0), "expires_at"),
])
def test_create_key_rejects_invalid_spec(tmp_path: Path, spec: manage.KeySpec,
                                         param: str) -> None:
    store = SqliteKeyStore(tmp_path / "keys.db")
    with pytest.raises(manage.InvalidKeySpecError) as caught:
        manage.create_key(store, spec)
    assert caught.value.param == param
    assert not store.has_keys()


def test_rotate_copies_key_and_ends_old_one(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "keys.db")
    now = time.time()
    old = manage.create_key(store, manage.KeySpec(
        user_id="alice", role="admin", models=("m1",), requests_per_minute=5), now).record

    issued, ended = manage.rotate_key(store, old.prefix, grace_s=60, now=now)

    new = issued.record
    assert new.prefix != old.prefix
    assert (new.user_id, new.role, new.models, new.requests_per_minute) == (
        "alice", "admin", ("m1",), 5)
    assert ended.status(now + 59) == "active"
    assert ended.status(now + 60) == "expired"

    issued_again, revoked = manage.rotate_key(store, new.prefix, now=now)
    assert revoked.status(now) == "revoked"
    assert issued_again.record.status(now) == "active"


def test_rotate_rejects_inactive_key(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "keys.db")
    record = manage.create_key(store, manage.KeySpec(user_id="alice")).record
    manage.revoke_key(store, record.prefix)
    with pytest.raises(manage.InvalidKeySpecError, match="revoked"):
        manage.rotate_key(store, record.prefix)


def test_unknown_prefix_is_not_found(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "keys.db")
    with pytest.raises(manage.KeyNotFoundError, match="keys list"):
        manage.revoke_key(store, "sk-enc-0123456789ab")
    with pytest.raises(manage.KeyNotFoundError):
        manage.find_key(store, "not a prefix")


def test_key_view_hides_secret_material(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "keys.db")
    issued = manage.create_key(store, manage.KeySpec(user_id="alice"))
    view = manage.key_view(issued.record)
    assert view["prefix"] == f"sk-enc-{issued.record.prefix}"
    assert view["status"] == "active"
    assert "salt" not in view
    assert "digest" not in view
    assert "key" not in view
