"""Signed checkpoints: an Ed25519 signature over a sequence number and the chain hash there.

The message signed for a checkpoint is the ASCII text
``enclave-audit-checkpoint/v1\\n{seq}\\n{hash}\\n{time_us}``, so anyone with the public key
can check that the chain up to ``seq`` ended in ``hash`` at ``time_us``. A key is named by
its key id: the first 16 hex digits of the SHA-256 of its 32 raw public-key bytes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enclave.audit.errors import AuditError
from enclave.errors import reason

logger = logging.getLogger(__name__)

_MESSAGE_PREFIX = "enclave-audit-checkpoint/v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that the chain's row ``seq`` has hash ``hash``."""

    seq: int
    hash: str
    time_us: int
    key_id: str
    signature: str  # base64 of the 64-byte Ed25519 signature

    def message(self) -> bytes:
        return checkpoint_message(self.seq, self.hash, self.time_us)


class SignatureCheck(Enum):
    VALID = "valid"
    UNKNOWN_KEY = "unknown-key"
    INVALID = "invalid"


def checkpoint_message(seq: int, chain_hash: str, time_us: int) -> bytes:
    """Return the bytes that a checkpoint signature covers."""
    return f"{_MESSAGE_PREFIX}\n{seq}\n{chain_hash}\n{time_us}".encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the id of a public key: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    """Signs checkpoints with one private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, seq: int, chain_hash: str, time_us: int) -> Checkpoint:
        signature = self._private_key.sign(checkpoint_message(seq, chain_hash, time_us))
        return Checkpoint(seq, chain_hash, time_us, self.key_id,
                          base64.b64encode(signature).decode("ascii"))

    def public_key_pem(self) -> str:
        return public_key_pem(self.public_key)


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """Return a public key as SubjectPublicKeyInfo PEM text."""
    pem = public_key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Generate a new Ed25519 key and write it to ``path`` as PEM with mode 0600.

    The file is created with O_EXCL, so an existing key is never overwritten.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    logger.info("Created the audit signing key %s (key id %s)", path, key_id(
        private_key.public_key()))
    return private_key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the Ed25519 private key at ``path``; raise AuditError if it is missing,
    readable by other users or not an Ed25519 key."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuditError(
            f"The audit signing key {path} does not exist. Run `enclave audit init` to create "
            "it, or set audit.signing_key to the key file."
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditError(
            f"The audit signing key {path} is accessible to other users (mode "
            f"{stat.S_IMODE(mode):04o}). Restrict it with `chmod 600 {path}`."
        )
    try:
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise AuditError(f"The audit signing key {path} is not a valid PEM key: "
                         f"{reason(exc)}.") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise AuditError(f"The audit signing key {path} is not an Ed25519 key.")
    return private_key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the key at ``path``, creating it first if it does not exist."""
    if not path.exists():
        try:
            return create_signing_key(path)
        except FileExistsError:
            pass  # another process created it a moment ago; read that one
    return load_signing_key(path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM) or take the public half of a private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"Cannot read the public key {path}: {exc.strerror}.") from None
    try:
        if b"PRIVATE KEY" in data:
            key: object = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditError(f"The key file {path} is not a valid PEM key: {reason(exc)}.") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"The key file {path} does not hold an Ed25519 key.")
    return key


def trusted_keys(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Index public keys by key id."""
    return {key_id(key): key for key in keys}


def check_signature(checkpoint: Checkpoint, keys: dict[str, Ed25519PublicKey]) -> SignatureCheck:
    """Check a checkpoint's signature against the trusted keys."""
    public_key = keys.get(checkpoint.key_id)
    if public_key is None:
        return SignatureCheck.UNKNOWN_KEY
    try:
        public_key.verify(base64.b64decode(checkpoint.signature, validate=True),
                          checkpoint.message())
    except (InvalidSignature, ValueError):
        return SignatureCheck.INVALID
    return SignatureCheck.VALID
