"""Per-key rate limits: requests per minute and tokens per minute.

Both limits are token buckets that hold one minute's allowance and refill continuously,
kept in the GCRA form: one number per bucket, its theoretical arrival time (TAT). A bucket
with TAT ``t`` at time ``now`` has used ``t - now`` seconds of its 60-second window.

* Requests: a request is admitted if adding one request's interval (60 / limit seconds)
  leaves the TAT at most 60 s ahead of now. A key can therefore send its whole minute's
  allowance in a burst, and then one request per interval.
* Tokens: a finished request's prompt and completion tokens are charged after the fact, and
  the charge may push the TAT more than 60 s ahead, into debt. The next request is rejected
  until the debt is paid off. Requests already running when the limit is reached finish, so
  a key can overshoot by the tokens of its concurrent requests.

Backends: this process (one replica), Redis or PostgreSQL (several replicas; the store's
clock is used, so replicas need not agree on the time).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from enclave.access.settings import AccessSettings
from enclave.errors import EnclaveError

WINDOW_S = 60.0

LimitKind = Literal["requests", "tokens"]


class RateLimitStoreError(EnclaveError):
    """The store of rate-limit counters cannot be reached or failed."""


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused request: the limit that refused it and the seconds until it would pass."""

    kind: LimitKind
    retry_after_s: float


def interval_s(limit_per_minute: int) -> float:
    """Return the seconds one unit of a per-minute limit occupies in the window."""
    return WINDOW_S / limit_per_minute


def acquire(tat: float, now: float, interval: float) -> tuple[float | None, float]:
    """Take one unit from a bucket: return (new TAT, 0) or (None, seconds to wait)."""
    new_tat = max(tat, now) + interval
    ahead = new_tat - now
    if ahead > WINDOW_S:
        return None, ahead - WINDOW_S
    return new_tat, 0.0


def exhausted_for(tat: float, now: float) -> float:
    """Return how long a bucket stays exhausted (its TAT 60 s or more ahead), or 0."""
    ahead = tat - now
    return ahead - WINDOW_S if ahead >= WINDOW_S else 0.0


def charge(tat: float, now: float, interval: float, units: int) -> float:
    """Return the TAT after taking ``units`` from a bucket, debt allowed."""
    return max(tat, now) + interval * units


def bucket_name(prefix: str, kind: LimitKind) -> str:
    return f"{prefix}:{kind}"


class RateLimiter(ABC):
    """Counts requests and tokens per key prefix."""

    description = ""

    @abstractmethod
    async def admit(self, prefix: str, requests_per_minute: int | None,
                    tokens_per_minute: int | None) -> Denial | None:
        """Check the token limit, then take one request; return why not if refused.

        A request refused by the token limit does not use up a request.
        """

    @abstractmethod
    async def charge_tokens(self, prefix: str, tokens: int, tokens_per_minute: int) -> None:
        """Charge a finished request's tokens to its key."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the limiter may not be used afterwards."""


class InProcessRateLimiter(RateLimiter):
    """Buckets in a dict of this process; correct for a single replica only."""

    description = "in-process"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    async def admit(self, prefix: str, requests_per_minute: int | None,
                    tokens_per_minute: int | None) -> Denial | None:
        with self._lock:
            now = self._clock()
            if tokens_per_minute is not None:
                wait = exhausted_for(self._tats.get(bucket_name(prefix, "tokens"), now), now)
                if wait > 0:
                    return Denial("tokens", wait)
            if requests_per_minute is not None:
                name = bucket_name(prefix, "requests")
                new_tat, wait = acquire(self._tats.get(name, now), now,
                                        interval_s(requests_per_minute))
                if new_tat is None:
                    return Denial("requests", wait)
                self._tats[name] = new_tat
            self._forget_idle(now)
        return None

    async def charge_tokens(self, prefix: str, tokens: int, tokens_per_minute: int) -> None:
        with self._lock:
            now = self._clock()
            name = bucket_name(prefix, "tokens")
            self._tats[name] = charge(self._tats.get(name, now), now,
                                      interval_s(tokens_per_minute), tokens)

    async def close(self) -> None:
        self._tats.clear()

    def _forget_idle(self, now: float) -> None:
        # A bucket whose TAT has passed is full again, the same as a missing one.
        if len(self._tats) > 10_000:
            self._tats = {name: tat for name, tat in self._tats.items() if tat > now}


def open_rate_limiter(settings: AccessSettings) -> RateLimiter:
    """Return the limiter that ``access.rate_limit_url`` names; connections open on first use."""
    url = settings.rate_limit_url
    if url is None:
        return InProcessRateLimiter()
    if url.startswith(("redis://", "rediss://")):
        from enclave.access.limits_redis import RedisRateLimiter

        return RedisRateLimiter(url)
    from enclave.access.limits_postgres import PostgresRateLimiter

    return PostgresRateLimiter(url)
