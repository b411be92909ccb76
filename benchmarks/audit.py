"""Audit trail benchmark: request-path overhead, sustained record rate, verification speed.

Rows:

1. overhead per request: ``open_request`` + ``complete_request`` of one request at a time,
   p50 and p99, on SQLite (synchronous=normal and full) and PostgreSQL;
2. the same pair under 32 concurrent asyncio requests (group commit at work);
3. sustained record rate with 64 concurrent asyncio writers: SQLite, PostgreSQL with one
   process, and PostgreSQL with two processes appending to one chain (the cost of the
   head-row lock);
4. verification of 1,000,000 records on SQLite, generated in bulk through the store's own
   sealing code, and the generation rate itself.

Targets: <= 1 ms p50 added per request, >= 5,000 records/s on SQLite, 1,000,000 records
verified in <= 30 s. PostgreSQL runs in a scratch database ``enclave_bench_<pid>`` on
127.0.0.1, created here and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import markdown_table, write_results
from enclave.audit import AuditSettings, AuditTrail, Principal, RequestClosed, RequestOpened
from enclave.audit.records import close_record, now_us, open_record
from enclave.audit.signing import CheckpointSigner, load_signing_key, trusted_keys
from enclave.audit.sqlite_store import SQLiteStore
from enclave.audit.store import StoreOptions
from enclave.audit.verify import verify_chain

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
QUERY = ("Please summarize the attached quarterly report for [PERSON_1] and list the three "
         "largest cost items with their amounts.")
TARGET_P50_MS = 1.0
TARGET_SQLITE_RATE = 5000
TARGET_VERIFY_S = 30.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def opened(request_id: str) -> RequestOpened:
    return RequestOpened(request_id, Principal("user-0042", "sk-7f3a"), "/v1/chat/completions",
                         "SmolLM2-135M-Instruct.Q4_1", QUERY, client="10.20.30.40",
                         pii={"PERSON": 1}, privacy_profile="finance")


def closed(request_id: str) -> RequestClosed:
    return RequestClosed(request_id, 200, response_chars=812, prompt_tokens=64,
                         completion_tokens=187, latency_ms=2304.5)


# Request-path overhead.


def sequential_overhead(trail: AuditTrail, requests: int) -> list[float]:
    """Return the seconds that open + complete add to each of ``requests`` in a row."""
    timings = []
    for index in range(requests):
        started = time.perf_counter()
        trail.open_request(opened(f"seq-{index}"))
        trail.complete_request(closed(f"seq-{index}"))
        timings.append(time.perf_counter() - started)
    return timings


def concurrent_overhead(trail: AuditTrail, requests: int, concurrency: int) -> list[float]:
    """Return open + complete seconds per request with ``concurrency`` requests at a time."""
    async def one(index: int, timings: list[float]) -> None:
        started = time.perf_counter()
        await trail.open_request_async(opened(f"con-{index}"))
        await trail.complete_request_async(closed(f"con-{index}"))
        timings.append(time.perf_counter() - started)

    async def run_all() -> list[float]:
        timings: list[float] = []
        for first in range(0, requests, concurrency):
            await asyncio.gather(*(one(index, timings)
                                   for index in range(first, min(requests, first + concurrency))))
        return timings

    return asyncio.run(run_all())


def record_rate(trail: AuditTrail, records: int, concurrency: int) -> float:
    """Return committed records/s with ``concurrency`` tasks appending open records."""
    async def writer(worker: int, count: int) -> None:
        for index in range(count):
            await trail.open_request_async(opened(f"rate-{worker}-{index}"))

    async def run_all() -> None:
        share = records // concurrency
        await asyncio.gather(*(writer(worker, share) for worker in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(run_all())
    return (records // concurrency) * concurrency / (time.perf_counter() - started)


def overhead_row(name: str, timings: list[float]) -> dict[str, Any]:
    return {"store": name, "requests": len(timings),
            "p50_ms": round(percentile(timings, 0.5) * 1000, 3),
            "p99_ms": round(percentile(timings, 0.99) * 1000, 3)}


# PostgreSQL scratch database and a second writer process.


@contextmanager
def scratch_database() -> Iterator[str | None]:
    """Create enclave_bench_<pid>; yield its URL (None without a server) and drop it."""
    name = f"enclave_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True,
                                connect_timeout=3)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL rows skipped: no server at {POSTGRES_SERVER} ({exc})", flush=True)
        yield None
        return
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{POSTGRES_SERVER}/{name}"
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


RATE_PROCESS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from benchmarks.audit import AuditSettings, AuditTrail, record_rate

    trail = AuditTrail(AuditSettings(store_url=sys.argv[1]), Path(sys.argv[2]))
    print(record_rate(trail, int(sys.argv[3]), 64), flush=True)
    trail.close()
""")


def two_process_rate(url: str, data_dir: Path, records: int) -> float:
    """Return the combined records/s of two processes appending to one chain."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    processes = [subprocess.Popen([sys.executable, "-c", RATE_PROCESS, url,
                                   str(data_dir / f"p{index}"), str(records)],
                                  env=env, stdout=subprocess.PIPE, text=True)
                 for index in range(2)]
    rates = [float(process.communicate(timeout=600)[0].strip()) for process in processes]
    return sum(rates)


# Verification of a large chain.


def bulk_records(count: int) -> Iterator[dict[str, Any]]:
    """Yield open and close records of count // 2 requests, in pairs."""
    time_us = now_us()
    for index in range(count // 2):
        request_id = f"bulk-{index:07d}"
        yield open_record(opened(request_id), excerpt_chars=50, digest_only=False,
                          time_us=time_us)
        yield close_record(closed(request_id), time_us=time_us + 1)
        time_us += 1000


def generate_chain(store: SQLiteStore, count: int, batch: int = 10_000) -> float:
    """Append ``count`` records in batches through the store; return records/s."""
    started = time.perf_counter()
    pending: list[dict[str, Any]] = []
    for record in bulk_records(count):
        pending.append(record)
        if len(pending) == batch:
            store.append(pending)
            pending = []
    store.append(pending)
    return count / (time.perf_counter() - started)


def verify_speed(folder: Path, count: int) -> dict[str, Any]:
    signer = CheckpointSigner(load_signing_key(folder / "audit" / "signing-key.pem"))
    store = SQLiteStore(folder / "verify.db", StoreOptions(signer=signer))
    store.migrate()
    generation_rate = generate_chain(store, count)

    started = time.perf_counter()
    with store.snapshot():
        report = verify_chain(store, trusted_keys([signer.public_key]))
    seconds = time.perf_counter() - started
    size_mb = (folder / "verify.db").stat().st_size / 1e6
    store.close()
    if not report.ok:
        raise RuntimeError(f"the generated chain does not verify: {report.breaks[:3]}")
    return {"records": report.records_checked, "checkpoints": report.checkpoints_checked,
            "verify_s": round(seconds, 2), "verify_records_per_s": round(count / seconds),
            "generate_records_per_s": round(generation_rate), "database_mb": round(size_mb)}


def measure(requests: int, rate_records: int, verify_records: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="enclave-audit-bench-"))
    overhead: list[dict[str, Any]] = []
    rates: list[dict[str, Any]] = []
    try:
        for synchronous in ("normal", "full"):
            settings = AuditSettings(sqlite_synchronous=synchronous)
            with AuditTrail(settings, folder / f"sqlite-{synchronous}") as trail:
                overhead.append(overhead_row(f"SQLite, synchronous={synchronous}, sequential",
                                             sequential_overhead(trail, requests)))
                overhead.append(overhead_row(
                    f"SQLite, synchronous={synchronous}, 32 concurrent",
                    concurrent_overhead(trail, requests, 32)))
                rates.append({"store": f"SQLite, synchronous={synchronous}", "processes": 1,
                              "records_per_s": round(record_rate(trail, rate_records, 64))})
        with scratch_database() as url:
            if url is not None:
                with AuditTrail(AuditSettings(store_url=url), folder / "pg") as trail:
                    overhead.append(overhead_row("PostgreSQL, sequential",
                                                 sequential_overhead(trail, requests)))
                    overhead.append(overhead_row("PostgreSQL, 32 concurrent",
                                                 concurrent_overhead(trail, requests, 32)))
                    rates.append({"store": "PostgreSQL", "processes": 1,
                                  "records_per_s": round(record_rate(trail, rate_records, 64))})
                rates.append({"store": "PostgreSQL", "processes": 2, "records_per_s": round(
                    two_process_rate(url, folder, rate_records // 2))})
        verify = verify_speed(folder / "sqlite-normal", verify_records)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"overhead": overhead, "rates": rates, "verify": verify}


def render(results: dict[str, Any]) -> str:
    overhead = markdown_table(
        ["Store and load", "Requests", "p50 ms", "p99 ms"],
        [[row["store"], row["requests"], row["p50_ms"], row["p99_ms"]]
         for row in results["overhead"]])
    rates = markdown_table(
        ["Store", "Processes", "Records/s"],
        [[row["store"], row["processes"], row["records_per_s"]] for row in results["rates"]])
    verify = results["verify"]
    load = results["load_average_1m"]
    verify_table = markdown_table(
        ["Records", "Checkpoints", "Verify s", "Verify records/s", "Generate records/s",
         "Database MB"],
        [[verify["records"], verify["checkpoints"], verify["verify_s"],
          verify["verify_records_per_s"], verify["generate_records_per_s"],
          verify["database_mb"]]])
    return (
        "# Audit trail benchmark\n\n"
        "Produced by `python -m benchmarks audit` (benchmarks/audit.py). Load average "
        f"(1 min) of the machine: {load['before']} before the run, {load['after']} after.\n\n"
        f"## Overhead per request (open + complete), target p50 <= {TARGET_P50_MS} ms\n\n"
        f"{overhead}\n"
        f"## Sustained record rate, 64 concurrent writers per process, target SQLite >= "
        f"{TARGET_SQLITE_RATE}/s\n\n{rates}\n"
        f"## Verification, target {verify['records']:,} records in <= {TARGET_VERIFY_S:g} s"
        f"\n\n{verify_table}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate-records", type=int, default=40_000)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    args = parser.parse_args(argv if argv is not None else [])
    # Other processes on the machine move these numbers a lot, so the results say how
    # busy it was.
    load_before = os.getloadavg()[0]
    results = measure(args.requests, args.rate_records, args.verify_records)
    results["load_average_1m"] = {"before": round(load_before, 2),
                                  "after": round(os.getloadavg()[0], 2)}
    path = write_results("audit", results, render(results))
    print(path.read_text(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
