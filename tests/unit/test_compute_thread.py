"""engine.compute: every call runs on one thread, and errors reach the caller."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from enclave.engine import compute


def current_thread_name() -> str:
    return threading.current_thread().name


def test_calls_from_many_threads_share_one() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        names = list(pool.map(lambda _: compute.run(current_thread_name), range(20)))

    assert set(names) == {"enclave-compute"}


def test_error_is_raised_in_caller() -> None:
    def failing() -> None:
        raise ValueError("decode failed")

    with pytest.raises(ValueError, match="decode failed"):
        compute.run(failing)
    assert compute.run(current_thread_name) == "enclave-compute"


def test_nested_call_runs_inline() -> None:
    assert compute.run(compute.run, current_thread_name) == "enclave-compute"
