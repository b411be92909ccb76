"""Rate-limit buckets in Redis, shared by every replica that uses the same database.

Each check is one Lua script, so it runs atomically in Redis, and it reads the time from
Redis (``TIME``), so replicas with different clocks agree. A bucket key expires once its
bucket is full again, so idle keys cost no memory.
"""

from __future__ import annotations

from redis import asyncio as redis_asyncio
from redis.exceptions import RedisError

from enclave.access.limits import (
    WINDOW_S,
    Denial,
    LimitKind,
    RateLimiter,
    RateLimitStoreError,
    interval_s,
)

KEY_NAMESPACE = "enclave:ratelimit:"
TIMEOUT_S = 5.0

# KEYS: tokens bucket, requests bucket. ARGV: token interval and request interval in seconds
# (0 = no limit), window in seconds. Returns {kind, seconds to wait} as strings, because
# Redis truncates Lua numbers to integers.
_ADMIT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local token_interval = tonumber(ARGV[1])
local request_interval = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
if token_interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat - now >= window then
    return {'tokens', tostring(tat - now - window)}
  end
end
if request_interval > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or now), now) + request_interval
  if tat - now > window then
    return {'requests', tostring(tat - now - window)}
  end
  redis.call('SET', KEYS[2], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return {'ok', '0'}
"""

# KEYS: tokens bucket. ARGV: seconds to add (interval x tokens).
_CHARGE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return 'ok'
"""


def redis_key(prefix: str, kind: LimitKind) -> str:
    return f"{KEY_NAMESPACE}{prefix}:{kind}"


class RedisRateLimiter(RateLimiter):
    def __init__(self, url: str) -> None:
        self._client = redis_asyncio.Redis.from_url(
            url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
        pool_arguments = self._client.connection_pool.connection_kwargs
        self.description = (f"Redis {pool_arguments.get('host', '?')}:"
                            f"{pool_arguments.get('port', '?')}/{pool_arguments.get('db', 0)}")
        self._admit = self._client.register_script(_ADMIT)
        self._charge = self._client.register_script(_CHARGE)

    async def admit(self, prefix: str, requests_per_minute: int | None,
                    tokens_per_minute: int | None) -> Denial | None:
        arguments = [
            interval_s(tokens_per_minute) if tokens_per_minute else 0,
            interval_s(requests_per_minute) if requests_per_minute else 0,
            WINDOW_S,
        ]
        try:
            kind, wait = await self._admit(
                keys=[redis_key(prefix, "tokens"), redis_key(prefix, "requests")],
                args=arguments)
        except RedisError as exc:
            raise RateLimitStoreError(f"{self.description} failed: {exc}") from None
        if kind == b"ok":
            return None
        return Denial("tokens" if kind == b"tokens" else "requests", float(wait))

    async def charge_tokens(self, prefix: str, tokens: int, tokens_per_minute: int) -> None:
        try:
            await self._charge(keys=[redis_key(prefix, "tokens")],
                               args=[interval_s(tokens_per_minute) * tokens])
        except RedisError as exc:
            raise RateLimitStoreError(f"{self.description} failed: {exc}") from None

    async def close(self) -> None:
        await self._client.aclose()
