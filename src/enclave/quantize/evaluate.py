"""Measure what a quantization costs: size, speed, perplexity and divergence from a reference.

Every model sees the same token ids (the reference's tokenization of the text), cut into
windows of ``window`` tokens. Each window is decoded in one llama.cpp batch that returns the
logits of every position, from an empty KV cache, and row ``i`` is scored on token ``i + 1``.
The reference's log-probabilities are kept in a temporary file, so a long text or a large
vocabulary does not have to fit in memory twice.

* perplexity: exp of the mean negative log-likelihood of the text;
* KLD: mean KL divergence of the candidate's next-token distribution from the reference's;
* top-1 agreement: share of positions where both pick the same most likely token.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import llama_cpp
import numpy as np

from enclave.engine.llama_model import LlamaModel
from enclave.models.quant_types import file_type_by_id
from enclave.quantize.errors import QuantizeError
from enclave.quantize.metrics import Accumulator, FloatArray, log_softmax

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 512
DEFAULT_DECODE_TOKENS = 32

Progress = Callable[[str], None]


class LogitSource(Protocol):
    """A model that returns the logits of every position of a token window."""

    label: str
    type_name: str
    size_bytes: int
    load_seconds: float
    n_vocab: int

    def window_logits(self, tokens: list[int]) -> FloatArray:
        """Return logits of shape (len(tokens), n_vocab), starting from an empty cache."""

    def decode_rate(self, prompt: list[int], count: int) -> float:
        """Return tokens per second of greedy generation of ``count`` tokens after ``prompt``."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EvalRow:
    """The measurements of one model; ratios and deltas are against the reference."""

    label: str
    type_name: str
    size_bytes: int
    size_ratio: float
    load_seconds: float
    prefill_tokens_s: float
    decode_tokens_s: float
    perplexity: float
    delta_ppl_percent: float
    mean_kld: float
    top1_agreement: float
    is_reference: bool = False


@dataclass
class EvalReport:
    reference: Path
    text_name: str
    tokens: int
    scored_positions: int
    window: int
    threads: int
    rows: list[EvalRow] = field(default_factory=list)


class LlamaSource:
    """A GGUF model in llama.cpp, with one context that returns logits for every token."""

    def __init__(self, path: Path, window: int, threads: int) -> None:
        started = time.perf_counter()
        self.model = LlamaModel(path)
        self.load_seconds = time.perf_counter() - started
        file_type_id = self.model.metadata.get("general.file_type")
        known = file_type_by_id(int(file_type_id)) if file_type_id else None
        self.label = path.name
        self.type_name = known.name if known else "?"
        self.size_bytes = path.stat().st_size
        self.n_vocab = self.model.n_vocab
        self.window = window
        self.prefill_seconds = 0.0
        self.prefill_tokens = 0

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = window
        params.n_batch = window
        params.n_ubatch = window
        params.n_seq_max = 1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        assert self.model.pointer is not None
        self.context = llama_cpp.llama_init_from_model(self.model.pointer, params)
        if not self.context:
            self.model.close()
            raise QuantizeError(f"llama.cpp could not create a {window}-token context for "
                                f"{path}; lower --window.")
        self.memory = llama_cpp.llama_get_memory(self.context)
        self.batch = llama_cpp.llama_batch_init(window, 0, 1)
        # One untimed decode pages in the memory-mapped weights, so the first timed window
        # does not pay for reading the file.
        self._decode([self.model.bos_token if self.model.bos_token >= 0 else 0], 0, False)

    def _decode(self, tokens: list[int], start: int, all_logits: bool) -> None:
        batch = self.batch
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = start + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = all_logits or index == len(tokens) - 1
        batch.n_tokens = len(tokens)
        status = llama_cpp.llama_decode(self.context, batch)
        if status != 0:
            raise QuantizeError(f"llama_decode returned {status} for {self.label}.")

    def window_logits(self, tokens: list[int]) -> FloatArray:
        llama_cpp.llama_memory_clear(self.memory, True)
        started = time.perf_counter()
        self._decode(tokens, 0, all_logits=True)
        self.prefill_seconds += time.perf_counter() - started
        self.prefill_tokens += len(tokens)
        pointer = llama_cpp.llama_get_logits(self.context)
        values = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(len(tokens),
                                                                         self.n_vocab))
        return np.array(values, dtype=np.float32)

    def decode_rate(self, prompt: list[int], count: int) -> float:
        llama_cpp.llama_memory_clear(self.memory, True)
        self._decode(prompt, 0, all_logits=False)
        position = len(prompt)
        elapsed = 0.0
        for _ in range(count):
            pointer = llama_cpp.llama_get_logits_ith(self.context, -1)
            row = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                        shape=(self.n_vocab,))
            token = int(row.argmax())
            started = time.perf_counter()
            self._decode([token], position, all_logits=False)
            elapsed += time.perf_counter() - started
            position += 1
        return count / elapsed if elapsed else float("inf")

    @property
    def prefill_rate(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    def close(self) -> None:
        if self.context:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.context)
            self.context = None
        self.model.close()


def tokenize_text(reference: Path, text: str, tokens: int) -> list[int]:
    """Return the first ``tokens`` token ids of ``text`` in the reference's vocabulary."""
    model = LlamaModel(reference, vocab_only=True)
    try:
        ids = model.tokenize(text, add_special=True, parse_special=False)
    finally:
        model.close()
    if len(ids) < 2:
        raise QuantizeError("The evaluation text gives fewer than 2 tokens; pass a longer --text.")
    if len(ids) < tokens:
        logger.info("The text has %d tokens, fewer than the %d asked for; using all of them",
                    len(ids), tokens)
    return ids[:tokens]


def split_windows(ids: list[int], window: int) -> list[list[int]]:
    """Cut ``ids`` into windows of at most ``window`` tokens; a last window of one is dropped."""
    windows = [ids[start:start + window] for start in range(0, len(ids), window)]
    return [chunk for chunk in windows if len(chunk) >= 2]


class ReferenceStore:
    """The reference's log-probabilities and top-1 tokens, in a temporary memory-mapped file."""

    def __init__(self, folder: Path, positions: int, n_vocab: int) -> None:
        self.log_probs = np.lib.format.open_memmap(
            folder / "reference.npy", mode="w+", dtype=np.float32, shape=(positions, n_vocab))
        self.top1 = np.zeros(positions, dtype=np.int64)


def _score(source: LogitSource, windows: list[list[int]], store: ReferenceStore,
           is_reference: bool) -> Accumulator:
    totals = Accumulator()
    offset = 0
    for tokens in windows:
        log_probs = log_softmax(source.window_logits(tokens))[:-1]
        targets = np.asarray(tokens[1:], dtype=np.int64)
        rows = slice(offset, offset + len(targets))
        if is_reference:
            store.log_probs[rows] = log_probs
            store.top1[rows] = log_probs.argmax(axis=1)
            totals.add(log_probs, targets, None, None)
        else:
            totals.add(log_probs, targets, np.asarray(store.log_probs[rows]), store.top1[rows])
        offset += len(targets)
    return totals


def _row(source: LogitSource, totals: Accumulator, prefill_rate: float, decode_rate: float,
         reference: EvalRow | None) -> EvalRow:
    reference_ppl = reference.perplexity if reference else totals.perplexity
    reference_size = reference.size_bytes if reference else source.size_bytes
    return EvalRow(
        label=source.label,
        type_name=source.type_name,
        size_bytes=source.size_bytes,
        size_ratio=source.size_bytes / reference_size,
        load_seconds=source.load_seconds,
        prefill_tokens_s=prefill_rate,
        decode_tokens_s=decode_rate,
        perplexity=totals.perplexity,
        delta_ppl_percent=100.0 * (totals.perplexity / reference_ppl - 1.0),
        mean_kld=totals.mean_kld if reference else 0.0,
        top1_agreement=totals.top1_agreement,
        is_reference=reference is None,
    )


def measure(source: LogitSource, windows: list[list[int]], store: ReferenceStore,
            reference: EvalRow | None, decode_tokens: int) -> EvalRow:
    """Score one model on every window and time its generation."""
    if source.n_vocab != store.log_probs.shape[1]:
        raise QuantizeError(
            f"{source.label} has a vocabulary of {source.n_vocab} tokens but the reference has "
            f"{store.log_probs.shape[1]}; compare only quantizations of the same model."
        )
    started = time.perf_counter()
    totals = _score(source, windows, store, is_reference=reference is None)
    scoring_seconds = time.perf_counter() - started
    prefill = getattr(source, "prefill_rate", 0.0) or (
        sum(len(chunk) for chunk in windows) / scoring_seconds)
    prompt = windows[0][: min(64, len(windows[0]))]
    decode = source.decode_rate(prompt, decode_tokens)
    return _row(source, totals, prefill, decode, reference)


@contextmanager
def _opened(factory: Callable[[], LogitSource]) -> Iterator[LogitSource]:
    source = factory()
    try:
        yield source
    finally:
        source.close()


def evaluate(
    reference: Path,
    candidates: list[Path],
    text: str,
    text_name: str,
    *,
    tokens: int = 1024,
    window: int = DEFAULT_WINDOW,
    threads: int | None = None,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    extra_sources: list[Callable[[], LogitSource]] | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Measure ``candidates`` (and ``extra_sources``) against ``reference`` on ``text``."""
    threads = threads or len(os.sched_getaffinity(0))
    ids = tokenize_text(reference, text, tokens)
    windows = split_windows(ids, window)
    positions = sum(len(chunk) - 1 for chunk in windows)
    report = EvalReport(reference, text_name, len(ids), positions, window, threads)

    factories: list[Callable[[], LogitSource]] = [
        partial(LlamaSource, path, window, threads) for path in [reference, *candidates]
    ]
    factories.extend(extra_sources or [])
    with tempfile.TemporaryDirectory(prefix="enclave-eval-") as folder:
        store: ReferenceStore | None = None
        reference_row: EvalRow | None = None
        for factory in factories:
            with _opened(factory) as source:
                if progress is not None:
                    progress(source.label)
                if store is None:
                    store = ReferenceStore(Path(folder), positions, source.n_vocab)
                row = measure(source, windows, store, reference_row, decode_tokens)
            reference_row = reference_row or row
            report.rows.append(row)
    return report


def report_to_dict(report: EvalReport) -> dict[str, Any]:
    """Return the report as JSON-ready values."""
    return {
        "reference": str(report.reference),
        "text": report.text_name,
        "tokens": report.tokens,
        "scored_positions": report.scored_positions,
        "window": report.window,
        "threads": report.threads,
        "rows": [
            {
                "model": row.label,
                "type": row.type_name,
                "size_bytes": row.size_bytes,
                "size_vs_reference": round(row.size_ratio, 4),
                "load_seconds": round(row.load_seconds, 3),
                "prefill_tokens_per_s": round(row.prefill_tokens_s, 1),
                "decode_tokens_per_s": round(row.decode_tokens_s, 1),
                "perplexity": round(row.perplexity, 4),
                "delta_ppl_percent": round(row.delta_ppl_percent, 3),
                "mean_kld": round(row.mean_kld, 6),
                "top1_agreement": round(row.top1_agreement, 4),
                "reference": row.is_reference,
            }
            for row in report.rows
        ],
    }
