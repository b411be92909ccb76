"""Audit record schema, and the functions that turn request events into records.

A request produces two records linked by its request id: an ``open`` record when the request
is accepted, before any generation, and a ``close`` record with the outcome. An ``open``
without a ``close`` means the request was interrupted (for example the process died while
generating). Records are plain dicts of JSON values so that their canonical JSON, which the
hash chain covers, is all there is to them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

RECORD_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
MAX_KEY_PREFIX_CHARS = 16

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Principal:
    """Sender of a request: the user id and the public prefix of the API key used.

    Only the prefix is recorded, never the key secret, so a key longer than
    MAX_KEY_PREFIX_CHARS is rejected as a probable secret.
    """

    user_id: str
    key_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.key_prefix is not None and len(self.key_prefix) > MAX_KEY_PREFIX_CHARS:
            raise ValueError(
                f"key_prefix is {len(self.key_prefix)} characters long; pass the public "
                f"prefix of the API key (at most {MAX_KEY_PREFIX_CHARS}), never the key itself"
            )


@dataclass(frozen=True, slots=True)
class RequestOpened:
    """A request accepted for processing; recorded before generation starts.

    ``query`` is the prompt text after PII redaction. The trail stores its SHA-256 digest
    and, unless ``audit.digest_only`` is set, its first ``audit.excerpt_chars`` characters.
    ``pii`` maps each PII kind found in the query (EMAIL, PHONE, ...) to its count.
    """

    request_id: str
    principal: Principal
    route: str
    model: str
    query: str
    client: str | None = None
    pii: Mapping[str, int] = field(default_factory=dict)
    privacy_profile: str | None = None


@dataclass(frozen=True, slots=True)
class RequestClosed:
    """The outcome of a request: its HTTP status, error code and usage.

    ``completion_tokens`` is the response length in tokens; ``pii`` counts PII kinds found
    in the response.
    """

    request_id: str
    status: int
    error_code: str | None = None
    response_chars: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    pii: Mapping[str, int] = field(default_factory=dict)


def now_us() -> int:
    """Return the current UTC time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def format_time(time_us: int) -> str:
    """Format microseconds since the epoch as ISO 8601 UTC, e.g. 2025-01-31T12:00:00.000001Z."""
    seconds, micros = divmod(time_us, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{micros:06d}Z"


def parse_time(text: str) -> int:
    """Return microseconds since the epoch of an ISO 8601 time (a date alone means midnight UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _pii_counts(pii: Mapping[str, int]) -> dict[str, int]:
    return {str(kind): int(count) for kind, count in pii.items() if count}


def open_record(
    event: RequestOpened, *, excerpt_chars: int, digest_only: bool, time_us: int
) -> Record:
    """Build the ``open`` record of an accepted request."""
    record: Record = {
        "v": RECORD_VERSION,
        "kind": "open",
        "time": format_time(time_us),
        "request_id": event.request_id,
        "user_id": event.principal.user_id,
        "key_prefix": event.principal.key_prefix,
        "client": event.client,
        "route": event.route,
        "model": event.model,
        "query_sha256": hashlib.sha256(event.query.encode("utf-8")).hexdigest(),
        "query_chars": len(event.query),
        "pii": _pii_counts(event.pii),
        "privacy_profile": event.privacy_profile,
    }
    if not digest_only:
        record["query_excerpt"] = event.query[:excerpt_chars]
    return record


def close_record(event: RequestClosed, *, time_us: int) -> Record:
    """Build the ``close`` record of a finished, failed or cancelled request."""
    return {
        "v": RECORD_VERSION,
        "kind": "close",
        "time": format_time(time_us),
        "request_id": event.request_id,
        "status": event.status,
        "error_code": event.error_code,
        "response_chars": event.response_chars,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "latency_ms": round(float(event.latency_ms), 3),
        "pii": _pii_counts(event.pii),
    }
