"""Rate limits: the bucket arithmetic, and each backend against a real store."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from enclave.access.limits import (
    InProcessRateLimiter,
    RateLimiter,
    acquire,
    charge,
    exhausted_for,
)
from enclave.access.limits_postgres import PostgresRateLimiter
from enclave.access.limits_redis import RedisRateLimiter
from tests.access_stores import scratch_postgres, scratch_redis


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_acquire_burst_then_interval() -> None:
    tat, now, interval = 0.0, 100.0, 20.0  # 3 requests per minute
    for _ in range(3):
        new_tat, wait = acquire(tat, now, interval)
        assert new_tat is not None and wait == 0
        tat = new_tat
    refused, wait = acquire(tat, now, interval)
    assert refused is None
    assert wait == pytest.approx(20.0)
    assert acquire(tat, now + 20.0, interval)[0] is not None


def test_token_debt_blocks_until_paid() -> None:
    now, interval = 100.0, 0.6  # 100 tokens per minute
    tat = charge(0.0, now, interval, 150)  # 50 tokens over the minute's allowance
    assert exhausted_for(tat, now) == pytest.approx(30.0)
    assert exhausted_for(tat, now + 29.9) > 0
    assert exhausted_for(tat, now + 30.0) == 0


def test_in_process_limiter_counts_requests() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock)

    results = [asyncio.run(limiter.admit("key", 2, None)) for _ in range(3)]

    assert results[:2] == [None, None]
    denial = results[2]
    assert denial is not None and denial.kind == "requests"
    assert denial.retry_after_s == pytest.approx(30.0)
    clock.now += 30.0
    assert asyncio.run(limiter.admit("key", 2, None)) is None
    assert asyncio.run(limiter.admit("other-key", 2, None)) is None


def test_in_process_token_denial_keeps_request_allowance() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock)
    asyncio.run(limiter.charge_tokens("key", 120, 60))  # one minute over

    denial = asyncio.run(limiter.admit("key", 1, 60))
    assert denial is not None and denial.kind == "tokens"
    assert denial.retry_after_s == pytest.approx(60.0)

    clock.now += 60.0
    assert asyncio.run(limiter.admit("key", 1, 60)) is None  # the request was not used up


@pytest.fixture(scope="module", params=["redis", "postgresql"])
def limiter_url(request: pytest.FixtureRequest) -> Iterator[str]:
    scratch = scratch_redis() if request.param == "redis" else scratch_postgres()
    with scratch as url:
        yield url


def open_limiter(url: str) -> RateLimiter:
    return RedisRateLimiter(url) if url.startswith("redis") else PostgresRateLimiter(url)


def test_shared_store_counts_requests_across_replicas(limiter_url: str) -> None:
    async def scenario() -> None:
        first, second = open_limiter(limiter_url), open_limiter(limiter_url)
        prefix = f"test-{secrets.token_hex(6)}"
        try:
            assert await first.admit(prefix, 3, None) is None
            assert await second.admit(prefix, 3, None) is None
            assert await first.admit(prefix, 3, None) is None
            denial = await second.admit(prefix, 3, None)
            assert denial is not None and denial.kind == "requests"
            assert 19.0 < denial.retry_after_s <= 20.0
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


def test_shared_store_charges_tokens_across_replicas(limiter_url: str) -> None:
    async def scenario() -> None:
        first, second = open_limiter(limiter_url), open_limiter(limiter_url)
        prefix = f"test-{secrets.token_hex(6)}"
        try:
            assert await second.admit(prefix, None, 100) is None
            await first.charge_tokens(prefix, 150, 100)
            denial = await second.admit(prefix, None, 100)
            assert denial is not None and denial.kind == "tokens"
            assert 29.0 < denial.retry_after_s <= 30.0
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


def test_shared_store_takes_last_request_once(limiter_url: str) -> None:
    """Concurrent requests from two replicas never get more than the limit."""
    async def scenario() -> None:
        first, second = open_limiter(limiter_url), open_limiter(limiter_url)
        prefix = f"test-{secrets.token_hex(6)}"
        try:
            results = await asyncio.gather(*[
                limiter.admit(prefix, 5, None) for limiter in [first, second] * 6])
            assert sum(result is None for result in results) == 5
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())
