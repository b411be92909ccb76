"""One thread per process runs every llama.cpp graph computation.

llama.cpp computes on the CPU with OpenMP, and libgomp keeps one thread team for each thread
that starts a parallel region. Two calling threads (two loaded models, or a chat model and an
embedding model) therefore mean two teams. On 2 cores, with a second model loaded but idle,
each model then decoded at 29 instead of 80 tokens/s (setting OMP_WAIT_POLICY or
GOMP_SPINCOUNT did not help). Running every ``llama_decode`` and ``llama_encode`` of
the process on this one thread keeps one team. It also makes steps of different models take
turns instead of competing for the same cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

Result = TypeVar("Result")

_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
    queue.SimpleQueue()
)
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def run(function: Callable[..., Result], *args: Any) -> Result:
    """Call ``function(*args)`` on the compute thread, wait, and return its result."""
    if threading.current_thread() is _thread:
        return function(*args)
    _ensure_started()
    future: Future[Result] = Future()
    _jobs.put((future, function, args))
    return future.result()


def _ensure_started() -> None:
    global _thread
    with _start_lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name="enclave-compute", daemon=True)
            _thread.start()


def _serve() -> None:
    while True:
        future, function, args = _jobs.get()
        try:
            future.set_result(function(*args))
        except BaseException as error:  # handed to the caller, which raises it
            future.set_exception(error)
