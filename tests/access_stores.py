"""Scratch PostgreSQL databases and Redis databases for the access tests, removed afterwards.

ENCLAVE_TEST_POSTGRES_URL and ENCLAVE_TEST_REDIS_URL name other servers than the local ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import redis

POSTGRES_SERVER = os.environ.get("ENCLAVE_TEST_POSTGRES_URL",
                                 "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("ENCLAVE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
RATE_LIMIT_KEYS = "enclave:ratelimit:*"


def _postgres_admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True,
                               connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_SERVER}: {exc}")


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it (and its connections) afterwards."""
    name = f"enclave_test_access_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _postgres_admin() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with _postgres_admin() as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def scratch_redis() -> Iterator[str]:
    """Yield the URL of an empty Redis database number; delete the rate-limit keys after."""
    try:
        probe = redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=3)
        databases = int(probe.config_get("databases").get("databases", 16))
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server at {REDIS_SERVER}: {exc}")
    finally:
        probe.close()

    # The highest-numbered empty database: applications start from 0.
    for number in range(databases - 1, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{number}")
        if client.dbsize() == 0:
            break
        client.close()
    else:
        pytest.skip(f"no empty database on the Redis server at {REDIS_SERVER}")
    try:
        yield f"{REDIS_SERVER}/{number}"
    finally:
        for key in client.scan_iter(RATE_LIMIT_KEYS):
            client.delete(key)
        client.close()
