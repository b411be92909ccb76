"""Cost of the access layer per request, and of the egress guard per socket call.

* authenticate: ``AccessControl.authenticate`` with a cached key whose request limit is
  checked on each call, for each rate-limit backend (in-process, Redis, PostgreSQL on
  127.0.0.1). This is what the access middleware adds to every API request.
* key lookup: the same call with ``cache_ttl_s = 0``, so every call reads the key store
  (SQLite file, PostgreSQL on 127.0.0.1) and no rate limit applies.
* egress guard: time per ``socket.getaddrinfo("127.0.0.1", 80)`` (an audited call the guard
  allows) and per ``os.stat`` (an audit event the hook returns from at once), in a child
  process with and without the guard.

Scratch Redis and PostgreSQL databases are created and removed as in the tests.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.access_stores import scratch_postgres, scratch_redis

from benchmarks.common import markdown_table, write_results
from enclave.access import manage
from enclave.access.control import AccessControl
from enclave.access.limits import InProcessRateLimiter, RateLimiter
from enclave.access.limits_postgres import PostgresRateLimiter
from enclave.access.limits_redis import RedisRateLimiter
from enclave.access.settings import AccessSettings
from enclave.access.store import KeyStore, SqliteKeyStore
from enclave.access.store_postgres import PostgresKeyStore

CALLS = 2000
GUARD_CALLS = 100_000

GUARD_SCRIPT = textwrap.dedent("""
    import json, os, socket, sys, time
    from enclave.ops import egress
    if sys.argv[1] == "on":
        egress.install(egress.EgressSettings())
    calls = int(sys.argv[2])
    started = time.perf_counter()
    for _ in range(calls):
        socket.getaddrinfo("127.0.0.1", 80)
    lookup = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    for _ in range(calls):
        os.stat(".")
    stat = (time.perf_counter() - started) / calls
    print(json.dumps({"getaddrinfo_us": lookup * 1e6, "stat_us": stat * 1e6}))
""")


def timed_calls(control: AccessControl, key: str) -> dict[str, float]:
    """Authenticate CALLS times; return the mean, median and p99 in microseconds."""
    async def run() -> list[float]:
        await control.authenticate(key)  # fills the cache and opens connections
        samples = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await control.authenticate(key)
            samples.append((time.perf_counter() - started) * 1e6)
        await control.limiter.close()
        return samples

    samples = sorted(asyncio.run(run()))
    return {"mean_us": round(statistics.fmean(samples), 1),
            "median_us": round(statistics.median(samples), 1),
            "p99_us": round(samples[int(len(samples) * 0.99)], 1)}


def measure(store: KeyStore, limiter: RateLimiter, *, cache_ttl_s: float,
            limited: bool) -> dict[str, float]:
    spec = manage.KeySpec("bench", requests_per_minute=1_000_000_000 if limited else None)
    key = manage.create_key(store, spec).key
    settings = AccessSettings(require_keys="always", cache_ttl_s=cache_ttl_s)
    control = AccessControl(settings, store, limiter, listens_on_loopback=True)
    return timed_calls(control, key)


@contextmanager
def stores() -> Iterator[dict[str, Any]]:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        postgres_url = stack.enter_context(scratch_postgres())
        redis_url = stack.enter_context(scratch_redis())
        sqlite = SqliteKeyStore(Path(folder) / "keys.db")
        postgres = PostgresKeyStore(postgres_url)
        yield {"sqlite": sqlite, "postgres": postgres, "postgres_url": postgres_url,
               "redis_url": redis_url}
        sqlite.close()
        postgres.close()


def guard_overhead() -> dict[str, dict[str, float]]:
    results = {}
    for mode in ("off", "on"):
        completed = subprocess.run([sys.executable, "-c", GUARD_SCRIPT, mode, str(GUARD_CALLS)],
                                   capture_output=True, text=True, check=True, timeout=300)
        results[mode] = {name: round(value, 2)
                         for name, value in json.loads(completed.stdout).items()}
    return results


def main() -> None:
    with stores() as opened:
        authenticate = {
            "in-process": measure(opened["sqlite"], InProcessRateLimiter(), cache_ttl_s=5,
                                  limited=True),
            "redis": measure(opened["sqlite"], RedisRateLimiter(opened["redis_url"]),
                             cache_ttl_s=5, limited=True),
            "postgresql": measure(opened["sqlite"], PostgresRateLimiter(opened["postgres_url"]),
                                  cache_ttl_s=5, limited=True),
        }
        lookup = {
            "sqlite": measure(opened["sqlite"], InProcessRateLimiter(), cache_ttl_s=0,
                              limited=False),
            "postgresql": measure(opened["postgres"], InProcessRateLimiter(), cache_ttl_s=0,
                                  limited=False),
        }
    guard = guard_overhead()

    rows = [[f"authenticate, cached key, {backend} limiter", *values.values()]
            for backend, values in authenticate.items()]
    rows += [[f"authenticate, key read from {store} (cache off)", *values.values()]
             for store, values in lookup.items()]
    markdown = (
        "# Access layer and egress guard overhead\n\n"
        f"{CALLS} sequential calls of `AccessControl.authenticate` per row, in one process; "
        "Redis 7 and PostgreSQL 15 on 127.0.0.1. Produced by `python -m benchmarks access`.\n\n"
        + markdown_table(["Case", "Mean (µs)", "Median (µs)", "p99 (µs)"], rows)
        + f"\nEgress guard, {GUARD_CALLS} calls each (µs per call):\n\n"
        + markdown_table(["Call", "Guard off", "Guard on"], [
            ["socket.getaddrinfo('127.0.0.1', 80)", guard["off"]["getaddrinfo_us"],
             guard["on"]["getaddrinfo_us"]],
            ["os.stat('.')", guard["off"]["stat_us"], guard["on"]["stat_us"]],
        ])
    )
    path = write_results("access", {"calls": CALLS, "authenticate": authenticate,
                                    "key_lookup": lookup, "egress_guard": guard}, markdown)
    print(markdown)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
