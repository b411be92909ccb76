"""Authentication and rate limiting of one request: presented key -> principal.

Key records are cached for ``access.cache_ttl_s`` seconds (5 by default), so most requests
do not reach the store. A key revoked through another replica or the CLI therefore stops
working here within ``cache_ttl_s``. A key revoked through this server's admin API stops at
once. Expiry is checked on every request against the cached record, so it is exact.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from enclave.access.keys import ANONYMOUS, KeyRecord, Principal, display_prefix, parse_key
from enclave.access.limits import RateLimiter, RateLimitStoreError, open_rate_limiter
from enclave.access.settings import AccessSettings
from enclave.access.store import KeyStore, KeyStoreError, open_key_store
from enclave.config import Settings
from enclave.errors import (
    AuthenticationError,
    PermissionDeniedError,
    RateLimitError,
    RequestError,
)

logger = logging.getLogger(__name__)

MAX_CACHED_KEYS = 10_000

_T = TypeVar("_T")


class AccessStoreUnavailableError(RequestError):
    """The key store or the rate-limit store cannot be reached; the request is rejected."""

    status_code = 503
    error_type = "server_error"


class AccessControl:
    """Turns a presented key into a Principal, applying the key rules and rate limits."""

    def __init__(self, settings: AccessSettings, store: KeyStore, limiter: RateLimiter, *,
                 listens_on_loopback: bool, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.limiter = limiter
        self.listens_on_loopback = listens_on_loopback
        self._clock = clock
        self._records: dict[str, tuple[float, KeyRecord | None]] = {}
        self._has_keys: tuple[float, bool] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessControl:
        return cls(settings.access, open_key_store(settings.access, settings.data_dir),
                   open_rate_limiter(settings.access),
                   listens_on_loopback=settings.server.is_loopback())

    async def close(self) -> None:
        await self.limiter.close()
        await asyncio.to_thread(self.store.close)

    async def keys_required(self) -> bool:
        """Return whether API requests need a key (the admin API always needs one)."""
        mode = self.settings.require_keys
        if mode == "always" or not self.listens_on_loopback:
            return True
        if mode == "never":
            return False
        return await self._store_has_keys()

    async def authenticate(self, presented: str | None, *, admin: bool = False) -> Principal:
        """Return the principal of a request, or raise a 401, 403, 429 or 503 RequestError.

        Without a key requirement every request is ANONYMOUS, whatever key it presents:
        clients such as Cherry Studio always send one.
        """
        if not admin and not await self.keys_required():
            return ANONYMOUS
        principal = await self.verify(presented)
        if admin and not principal.is_admin:
            raise PermissionDeniedError(
                f"The key {display_prefix(principal.key_prefix or '')} has role user; the "
                "admin API needs a key with role admin.", code="admin_required")
        await self._admit(principal)
        return principal

    async def verify(self, presented: str | None) -> Principal:
        """Return the principal of a valid, active key; raise AuthenticationError otherwise."""
        if not presented:
            raise AuthenticationError(
                "Missing API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
                code="missing_api_key")
        parsed = parse_key(presented)
        record = await self._record(parsed.prefix) if parsed else None
        if parsed is None or record is None or not record.matches(parsed.secret):
            raise AuthenticationError(
                "Invalid API key. Check the key, or ask an administrator for a new one.",
                code="invalid_api_key")

        now = self._clock()
        status = record.status(now)
        if status == "revoked":
            raise AuthenticationError(
                f"The API key {display_prefix(record.prefix)} was revoked. Ask an "
                "administrator for a new key.", code="revoked_api_key")
        if status == "expired":
            expired = datetime.fromtimestamp(record.expires_at or now, UTC)
            raise AuthenticationError(
                f"The API key {display_prefix(record.prefix)} expired at "
                f"{expired:%Y-%m-%d %H:%M} UTC. Ask an administrator for a new key.",
                code="expired_api_key")
        return record.principal()

    async def _admit(self, principal: Principal) -> None:
        prefix = principal.key_prefix
        if prefix is None or (principal.requests_per_minute is None
                              and principal.tokens_per_minute is None):
            return
        try:
            denial = await self.limiter.admit(prefix, principal.requests_per_minute,
                                              principal.tokens_per_minute)
        except RateLimitStoreError as exc:
            self._limit_store_failed(exc)
            return
        if denial is None:
            return

        retry_after_s = max(1, math.ceil(denial.retry_after_s))
        if denial.kind == "tokens":
            message = (f"The API key {display_prefix(prefix)} used its "
                       f"{principal.tokens_per_minute} tokens per minute. Retry after "
                       f"{retry_after_s} s.")
        else:
            message = (f"The API key {display_prefix(prefix)} reached its "
                       f"{principal.requests_per_minute} requests per minute. Retry after "
                       f"{retry_after_s} s.")
        raise RateLimitError(message, code=f"{denial.kind}_per_minute_exceeded",
                             retry_after_s=retry_after_s)

    async def charge_tokens(self, principal: Principal, tokens: int) -> None:
        """Charge a finished request's tokens to its key; failures are logged, not raised."""
        if principal.key_prefix is None or principal.tokens_per_minute is None or tokens <= 0:
            return
        try:
            await self.limiter.charge_tokens(principal.key_prefix, tokens,
                                             principal.tokens_per_minute)
        except RateLimitStoreError as exc:
            logger.error("Cannot charge %d tokens to key %s: %s", tokens,
                         display_prefix(principal.key_prefix), exc)

    def _limit_store_failed(self, error: RateLimitStoreError) -> None:
        if self.settings.rate_limit_failure_policy == "fail-open":
            logger.error("Rate limits not applied (access.rate_limit_failure_policy is "
                         "fail-open): %s", error)
            return
        logger.error("Request rejected because the rate-limit store failed: %s", error)
        raise AccessStoreUnavailableError(
            "Rate limits cannot be checked right now. Retry in a few seconds.",
            code="rate_limit_store_unavailable", retry_after_s=5) from None

    def forget(self, prefix: str) -> None:
        """Drop a cached key, so a change made through this process applies at once."""
        self._records.pop(prefix, None)
        self._has_keys = None

    async def _record(self, prefix: str) -> KeyRecord | None:
        now = time.monotonic()
        cached = self._records.get(prefix)
        if cached is not None and now - cached[0] < self.settings.cache_ttl_s:
            return cached[1]
        record = await self._from_store(self.store.get, prefix)
        if len(self._records) >= MAX_CACHED_KEYS:
            self._records.clear()
        self._records[prefix] = (now, record)
        return record

    async def _store_has_keys(self) -> bool:
        now = time.monotonic()
        if self._has_keys is not None and now - self._has_keys[0] < self.settings.cache_ttl_s:
            return self._has_keys[1]
        has_keys = await self._from_store(self.store.has_keys)
        self._has_keys = (now, has_keys)
        return has_keys

    async def _from_store(self, function: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.to_thread(function, *args)
        except KeyStoreError as exc:
            logger.error("Request rejected because the key store failed: %s", exc)
            raise AccessStoreUnavailableError(
                "API keys cannot be checked right now. Retry in a few seconds.",
                code="key_store_unavailable", retry_after_s=5) from None
