"""API keys: their format, how they are stored, and the principal a key stands for.

A key reads ``sk-enc-<prefix>-<secret>``. The prefix is 12 random hex digits, public, and
identifies the key in the store, in logs and in the audit trail. The secret is 32 random bytes
(256 bits) in URL-safe base64. The store keeps the prefix, a random 16-byte salt and
HMAC-SHA256(salt, prefix + ":" + secret), never the secret itself. A fast hash is enough
because the secret is random: guessing 256 bits is out of reach however fast each guess is,
unlike a password, which needs a slow hash because people choose guessable ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

Role = Literal["user", "admin"]
KeyStatus = Literal["active", "revoked", "expired"]

KEY_PREFIX = "sk-enc-"
PREFIX_HEX_DIGITS = 12
SECRET_BYTES = 32
ALL_MODELS = "*"

_KEY_PATTERN = re.compile(r"sk-enc-([0-9a-f]{12})-([A-Za-z0-9_-]{43})")
_PREFIX_PATTERN = re.compile(r"(?:sk-enc-)?([0-9a-f]{12})(?:-.*)?")


@dataclass(frozen=True, slots=True)
class Principal:
    """The sender of a request: the user behind a key, the models it may use, its limits.

    ``key_prefix`` is None for the anonymous principal of a server that does not require keys.
    """

    user_id: str
    key_prefix: str | None
    name: str = ""
    role: Role = "user"
    models: tuple[str, ...] = (ALL_MODELS,)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_use(self, model: str) -> bool:
        """Return whether ``model`` matches one of the key's model patterns (``*`` globs).

        An Ollama name with the default ``:latest`` tag matches the plain id as well.
        """
        names = {model, model.removesuffix(":latest")}
        return any(fnmatchcase(name, pattern) for name in names for pattern in self.models)


ANONYMOUS = Principal(user_id="anonymous", key_prefix=None)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as the store keeps it. Times are Unix seconds; None means never."""

    prefix: str
    salt: str
    digest: str
    user_id: str
    name: str = ""
    role: Role = "user"
    models: tuple[str, ...] = (ALL_MODELS,)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    revoked_at: float | None = None

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(
            user_id=self.user_id,
            key_prefix=self.prefix,
            name=self.name,
            role=self.role,
            models=self.models,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )

    def matches(self, secret: str) -> bool:
        """Return whether ``secret`` is this key's secret; compares in constant time."""
        return hmac.compare_digest(key_digest(self.salt, self.prefix, secret), self.digest)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    prefix: str
    secret: str


def generate_key() -> tuple[str, ParsedKey]:
    """Return a new random key and its parts."""
    prefix = secrets.token_hex(PREFIX_HEX_DIGITS // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{KEY_PREFIX}{prefix}-{secret}", ParsedKey(prefix, secret)


def parse_key(text: str) -> ParsedKey | None:
    """Split a presented key into prefix and secret; None if it is not an Enclave key."""
    match = _KEY_PATTERN.fullmatch(text.strip())
    if match is None:
        return None
    return ParsedKey(match.group(1), match.group(2))


def parse_prefix(text: str) -> str | None:
    """Return the prefix named by ``abcdef012345``, ``sk-enc-abcdef012345`` or a whole key."""
    match = _PREFIX_PATTERN.fullmatch(text.strip())
    return match.group(1) if match else None


def new_salt() -> str:
    return secrets.token_hex(16)


def key_digest(salt: str, prefix: str, secret: str) -> str:
    """Return HMAC-SHA256(salt, prefix:secret) in hex, the only form of a secret that is kept."""
    message = f"{prefix}:{secret}".encode()
    return hmac.new(bytes.fromhex(salt), message, hashlib.sha256).hexdigest()


def display_prefix(prefix: str) -> str:
    """Return the public part of a key as people see it, e.g. ``sk-enc-3f9a1c0b7e21``."""
    return f"{KEY_PREFIX}{prefix}"
