"""Create, list, revoke and rotate keys; shared by ``enclave keys`` and the admin API."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from enclave.access.keys import (
    ALL_MODELS,
    KeyRecord,
    Role,
    display_prefix,
    generate_key,
    key_digest,
    new_salt,
    parse_prefix,
)
from enclave.access.store import KeyExistsError, KeyStore
from enclave.errors import InvalidRequestError, RequestError

MAX_LIMIT = 1_000_000_000
_USER_ID = re.compile(r"[\w.@+-]{1,128}")
_MODEL_PATTERN = re.compile(r"\S{1,200}")
_PREFIX_ATTEMPTS = 3


class InvalidKeySpecError(InvalidRequestError):
    """A key's settings are invalid; the message names the field and the allowed values."""


class KeyNotFoundError(RequestError):
    status_code = 404
    error_type = "not_found_error"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Settings of a new key. ``expires_at`` is in Unix seconds, and None never expires."""

    user_id: str
    name: str = ""
    role: Role = "user"
    models: tuple[str, ...] = (ALL_MODELS,)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: ``key`` is the whole secret, which is never available again."""

    key: str
    record: KeyRecord


def validate_spec(spec: KeySpec, now: float) -> None:
    """Raise InvalidKeySpecError naming the first invalid field."""
    if not _USER_ID.fullmatch(spec.user_id):
        raise InvalidKeySpecError(
            f"Invalid user id {spec.user_id!r}: use 1 to 128 letters, digits or . _ @ + -.",
            param="user_id")
    if len(spec.name) > 200 or any(ord(character) < 32 for character in spec.name):
        raise InvalidKeySpecError(
            "Invalid name: use at most 200 characters and no control characters.", param="name")
    if spec.role not in ("user", "admin"):
        raise InvalidKeySpecError(f"Invalid role {spec.role!r}: use user or admin.",
                                  param="role")
    if not spec.models or not all(_MODEL_PATTERN.fullmatch(model) for model in spec.models):
        raise InvalidKeySpecError(
            f"Invalid models {list(spec.models)!r}: list at least one model id or pattern "
            "without spaces, or * for every model.", param="models")
    for field_name in ("requests_per_minute", "tokens_per_minute"):
        value = getattr(spec, field_name)
        if value is not None and not 1 <= value <= MAX_LIMIT:
            raise InvalidKeySpecError(
                f"Invalid {field_name} {value}: use a whole number from 1 to {MAX_LIMIT}, or "
                "leave it out for no limit.", param=field_name)
    if spec.expires_at is not None and spec.expires_at <= now:
        raise InvalidKeySpecError("The expiry time is in the past; choose a later one.",
                                  param="expires_at")


def create_key(store: KeyStore, spec: KeySpec, now: float | None = None) -> IssuedKey:
    """Store a new key for ``spec`` and return it with its secret."""
    now = time.time() if now is None else now
    validate_spec(spec, now)
    for attempt in range(_PREFIX_ATTEMPTS):
        key, parts = generate_key()
        salt = new_salt()
        record = KeyRecord(
            prefix=parts.prefix, salt=salt, digest=key_digest(salt, parts.prefix, parts.secret),
            user_id=spec.user_id, name=spec.name, role=spec.role, models=tuple(spec.models),
            requests_per_minute=spec.requests_per_minute,
            tokens_per_minute=spec.tokens_per_minute, created_at=now,
            expires_at=spec.expires_at,
        )
        try:
            store.add(record)
        except KeyExistsError:
            if attempt + 1 == _PREFIX_ATTEMPTS:
                raise
            continue  # two keys drew the same random prefix; draw again
        return IssuedKey(key, record)
    raise AssertionError("unreachable")


def find_key(store: KeyStore, prefix_text: str) -> KeyRecord:
    """Return the key named by its prefix (``sk-enc-…`` or the 12 hex digits)."""
    prefix = parse_prefix(prefix_text)
    record = store.get(prefix) if prefix else None
    if record is None:
        raise KeyNotFoundError(
            f"No key with prefix {prefix_text!r}. List the keys with `enclave keys list` or "
            "GET /admin/keys.", param="prefix", code="key_not_found")
    return record


def revoke_key(store: KeyStore, prefix_text: str, now: float | None = None) -> KeyRecord:
    """Revoke a key at once and return its updated record."""
    record = find_key(store, prefix_text)
    store.revoke(record.prefix, time.time() if now is None else now)
    return find_key(store, record.prefix)


def rotate_key(store: KeyStore, prefix_text: str, grace_s: float = 0.0,
               now: float | None = None) -> tuple[IssuedKey, KeyRecord]:
    """Issue a key with the same user, role, models, limits and expiry as an existing one.

    The old key stops working after ``grace_s`` seconds, at once when it is 0. Return the new
    key and the old key's updated record.
    """
    now = time.time() if now is None else now
    old = find_key(store, prefix_text)
    if old.status(now) != "active":
        raise InvalidKeySpecError(
            f"Key {display_prefix(old.prefix)} is {old.status(now)}; only an active key can be "
            "rotated. Create a new key instead.", param="prefix", code="key_not_active")
    if grace_s < 0:
        raise InvalidKeySpecError(f"Invalid grace period {grace_s} s: use 0 or more.",
                                  param="grace_s")
    spec = KeySpec(user_id=old.user_id, name=old.name, role=old.role, models=old.models,
                   requests_per_minute=old.requests_per_minute,
                   tokens_per_minute=old.tokens_per_minute, expires_at=old.expires_at)
    issued = create_key(store, spec, now)
    if grace_s == 0:
        store.revoke(old.prefix, now)
    else:
        store.expire(old.prefix, now + grace_s)
    return issued, find_key(store, old.prefix)


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def key_view(record: KeyRecord, now: float | None = None) -> dict[str, Any]:
    """Return a key as the API shows it: everything but the salt and digest."""
    return {
        "object": "api_key",
        "prefix": display_prefix(record.prefix),
        "user_id": record.user_id,
        "name": record.name,
        "role": record.role,
        "models": list(record.models),
        "requests_per_minute": record.requests_per_minute,
        "tokens_per_minute": record.tokens_per_minute,
        "created_at": iso_time(record.created_at),
        "expires_at": iso_time(record.expires_at),
        "revoked_at": iso_time(record.revoked_at),
        "status": record.status(time.time() if now is None else now),
    }
