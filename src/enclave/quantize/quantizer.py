"""Quantize a GGUF file with llama.cpp's quantizer (``llama_model_quantize``).

llama.cpp reports progress only through its log: one ``[  12/ 272] name ...`` line per
tensor. ``enclave.engine.llama_model`` routes that log into the ``enclave.llama_cpp`` logger,
so a handler on that logger turns the lines into progress callbacks; the total comes from the
source's tensor table.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from enclave.engine.llama_model import init_backend
from enclave.errors import reason
from enclave.models.gguf_reader import GgufSummary, read_gguf
from enclave.models.quant_types import FileType, file_type, file_type_by_id, ggml_type
from enclave.models.quant_types import is_quantized as is_quantized_type
from enclave.planner.architecture import from_gguf
from enclave.planner.mixture import should_quantize
from enclave.planner.weights import estimate_weights
from enclave.quantize.errors import QuantizeError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

_LLAMA_LOGGER = "enclave.llama_cpp"
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_FALLBACK_SUMMARY = re.compile(r"(\d+) of \d+ tensor\(s\) required fallback")


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    source: Path
    destination: Path
    file_type: FileType
    tensors: int
    source_bytes: int
    output_bytes: int
    seconds: float
    fallback_tensors: int


class _LogWatcher(logging.Handler):
    """Count per-tensor log lines, and keep llama.cpp's warnings and errors for the caller."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        super().__init__(logging.DEBUG)
        self.total = total
        self.progress = progress
        self.done = 0
        self.fallbacks = 0
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        match = _TENSOR_LINE.match(message)
        if match:
            self.done = int(match.group(1))
            if self.progress is not None:
                self.progress(self.done, self.total, match.group(3))
            return
        fallback = _FALLBACK_SUMMARY.search(message)
        if fallback:
            self.fallbacks = int(fallback.group(1))
        elif record.levelno >= logging.ERROR:
            self.errors.append(message)


@contextmanager
def _watching_llama_log(watcher: _LogWatcher) -> Iterator[None]:
    """Send llama.cpp's log to ``watcher`` only, at every level, for the duration."""
    llama_logger = logging.getLogger(_LLAMA_LOGGER)
    saved = (llama_logger.level, llama_logger.propagate)
    llama_logger.setLevel(logging.DEBUG)
    # The quantizer logs hundreds of info and fallback lines; they stay out of the caller's
    # handlers, and the summary is logged once afterwards.
    llama_logger.propagate = False
    llama_logger.addHandler(watcher)
    try:
        yield
    finally:
        llama_logger.removeHandler(watcher)
        llama_logger.setLevel(saved[0])
        llama_logger.propagate = saved[1]


def quantized_tensor_count(summary: GgufSummary) -> int:
    """Return how many of the file's weight tensors are stored in a block-quantized type."""
    return sum(
        1 for tensor in summary.tensors
        if should_quantize(tensor) and is_quantized_type(ggml_type(tensor.type_name))
    )


def source_type_name(summary: GgufSummary) -> str:
    known = file_type_by_id(summary.file_type_id) if summary.file_type_id is not None else None
    return known.name if known else "an unknown type"


def check_requantize(summary: GgufSummary, target: FileType, allow: bool) -> None:
    """Raise QuantizeError if the source is already quantized and ``allow`` is false.

    Quantizing a quantized file rounds already-rounded weights again: to a larger type it
    only grows the file (the lost precision does not come back), and to a smaller type the
    two rounding errors add up.
    """
    if quantized_tensor_count(summary) == 0:
        return
    source_name = source_type_name(summary)
    source_bits = 8.0 * summary.tensor_bytes / max(1, summary.n_params)
    target_bits = estimate_weights(summary.tensors, target, from_gguf(summary)).bits_per_weight
    if allow:
        logger.warning("Requantizing %s (%s) to %s as asked: the result carries the error of "
                       "both quantizations", summary.path, source_name, target.name)
        return
    if target_bits > source_bits:
        raise QuantizeError(
            f"{summary.path} is already quantized ({source_name}, {source_bits:.2f} bits per "
            f"weight). Quantizing it to {target.name} ({target_bits:.2f} bits per weight) "
            "would make the file larger without restoring the precision the first "
            "quantization lost. Quantize from the original F16/F32 model instead; to get a "
            "full-precision file of these exact weights, use 'enclave convert'. Pass "
            "--allow-requantize to do it anyway."
        )
    raise QuantizeError(
        f"{summary.path} is already quantized ({source_name}). Quantizing it again to "
        f"{target.name} adds a second rounding error to the first. Quantize from the original "
        "F16/F32 model instead, or pass --allow-requantize to accept the combined error."
    )


def _default_threads() -> int:
    return len(os.sched_getaffinity(0))


def quantize_gguf(
    source: Path,
    destination: Path,
    type_name: str,
    *,
    allow_requantize: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize ``source`` into ``destination`` as ``type_name`` (Q4_K_M, Q8_0, ...).

    The output is written to a temporary name next to ``destination`` and renamed when
    llama.cpp succeeds, so a failed run leaves no partial file behind.
    """
    try:
        target = file_type(type_name)
    except ValueError as exc:
        raise QuantizeError(f"--type: {reason(exc)}.") from None
    summary = read_gguf(source)
    check_requantize(summary, target, allow_requantize)
    if destination.resolve() == source.resolve():
        raise QuantizeError(f"The output {destination} is the source file; choose another path.")

    init_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(target.file_type)
    params.nthread = threads or _default_threads()
    params.allow_requantize = allow_requantize
    partial = destination.with_name(destination.name + ".partial")
    watcher = _LogWatcher(len(summary.tensors), progress)

    started = time.perf_counter()
    with _watching_llama_log(watcher):
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
    seconds = time.perf_counter() - started

    if status != 0:
        partial.unlink(missing_ok=True)
        detail = "; ".join(watcher.errors[-3:]) or f"status {status}"
        raise QuantizeError(f"llama.cpp could not quantize {source} to {target.name}: {detail}")
    os.replace(partial, destination)
    if watcher.fallbacks:
        logger.info("%d tensors of %s got a fallback type because their rows do not fill "
                    "whole %s blocks", watcher.fallbacks, source.name, target.base.name)
    return QuantizeResult(
        source=source,
        destination=destination,
        file_type=target,
        tensors=len(summary.tensors),
        source_bytes=summary.file_size,
        output_bytes=destination.stat().st_size,
        seconds=seconds,
        fallback_tensors=watcher.fallbacks,
    )
