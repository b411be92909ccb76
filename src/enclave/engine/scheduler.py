"""Continuous batching over one llama.cpp context.

One thread owns the ``llama_context``. Every step it

1. ends sequences that were cancelled or passed their deadline, and frees their slots;
2. admits waiting requests into free slots, reusing the longest cached prompt prefix;
3. builds one batch: the next token of every decoding sequence, then prompt chunks of the
   sequences still in prefill (at most ``prefill_chunk`` tokens while others decode, so a
   long prompt does not freeze the other streams);
4. runs ``llama_decode`` once;
5. samples one token for every sequence that produced logits, each with its own sampler
   chain and seed, and delivers the resulting events in one call.

A slot is a llama.cpp sequence id. When a request ends, its slot keeps the KV cache of the
tokens it processed, so the next request with the same prefix (the same system prompt, or the
same conversation one turn longer) prefills only what is new. With a unified KV cache a new
request can also take a prefix from another slot through ``llama_memory_seq_cp``, which
shares cells instead of copying them.

Nothing here imports a web framework; events go out through the ``deliver`` callback.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp

from enclave.engine import compute
from enclave.engine.llama_model import LlamaModel
from enclave.engine.sampling import SamplerChain
from enclave.engine.text import TextAssembler
from enclave.engine.types import (
    Event,
    Finished,
    FinishReason,
    GenerationRequest,
    TextDelta,
    Timings,
)
from enclave.errors import (
    DeadlineExceededError,
    EngineFailure,
    EngineUnavailableError,
    InvalidRequestError,
    QueueFullError,
    RequestError,
)

logger = logging.getLogger(__name__)

Delivery = Callable[[list[tuple["Sequence", Event]]], None]

_FLASH_ATTENTION = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


class StepTracer(Protocol):
    """Receives the phases of each scheduler step, timed with ``time.perf_counter()``.

    Phases: ``schedule`` (reap, admit, build the batch), ``prefill``, ``decode`` or
    ``prefill+decode`` (the ``llama_decode`` call, named after what the batch held),
    ``sample`` (sampling, detokenization, stop strings) and ``deliver``. Called on the
    scheduler thread, so it must be quick.
    """

    def record(self, phase: str, started_s: float, ended_s: float, prompt_tokens: int,
               generated_tokens: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PerfCounters:
    """llama.cpp's own counters of one context (``llama_perf_context``), in milliseconds.

    llama.cpp counts a ``llama_decode`` call of several tokens as prompt evaluation and a
    call of one token as evaluation. With continuous batching the split is approximate, but
    the sum is the time spent decoding.
    """

    load_ms: float
    prompt_eval_ms: float
    prompt_eval_tokens: int
    eval_ms: float
    eval_tokens: int


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Sizes of the context and the batching policy."""

    parallel: int = 8
    kv_cache_tokens: int = 32768
    kv_unified: bool = True
    flash_attention: str = "auto"
    batch_size: int = 512
    prefill_chunk: int = 256
    queue_size: int = 64
    threads: int = 2


@dataclass(eq=False, slots=True)
class Sequence:
    """A request in flight, from submission to its Finished event."""

    request: GenerationRequest
    sink: Any
    assembler: TextAssembler
    submitted_at: float
    sampler: SamplerChain | None = None
    slot: Slot | None = None
    prompt_done: int = 0
    pending_token: int | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    admitted_at: float | None = None
    first_token_at: float | None = None
    cancelled: bool = False
    finished: bool = False

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def in_prefill(self) -> bool:
        return self.prompt_done < len(self.request.prompt_tokens)


@dataclass(eq=False, slots=True)
class Slot:
    """One llama.cpp sequence id and the tokens whose KV entries it holds, in position order."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    sequence: Sequence | None = None
    released_at: float = 0.0


@dataclass(slots=True)
class _Added:
    """A sequence's part of the current batch, kept to undo it if the decode fails."""

    sequence: Sequence
    tokens: int
    was_pending: int | None


class SamplerError(RequestError):
    """A sampler chain could not be built for reasons the request did not cause."""

    status_code = 500
    error_type = "server_error"

    def __init__(self) -> None:
        super().__init__("The server could not set up sampling for this request; the server "
                         "log has the details.", code="sampler_failed")


def common_prefix_length(left: list[int], right: list[int]) -> int:
    """Return how many leading tokens two lists share."""
    limit = min(len(left), len(right))
    index = 0
    while index < limit and left[index] == right[index]:
        index += 1
    return index


class Scheduler:
    """Owns one llama_context and runs continuous batching on a background thread."""

    def __init__(self, model: LlamaModel, config: SchedulerConfig, deliver: Delivery) -> None:
        self.model = model
        self.config = config
        self._deliver = deliver
        self._context = self._create_context()
        self._memory = llama_cpp.llama_get_memory(self._context)
        self._batch = llama_cpp.llama_batch_init(config.batch_size, 0, 1)
        self.slots = [Slot(seq_id=index) for index in range(config.parallel)]
        self._waiting: deque[Sequence] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._failure: str | None = None
        self._free_slots = config.parallel
        # Copying another slot's prefix pays off only beyond this many tokens when a whole
        # buffer must be copied. With a unified cache, sharing cells is free.
        self._min_copy_gain = 1 if config.kv_unified else 32
        self._mean_request_s = 5.0
        # llama.cpp rounds the context size up, and splits it per sequence unless unified.
        self.kv_cells = int(llama_cpp.llama_n_ctx(self._context))
        self.kv_cells_per_sequence = int(llama_cpp.llama_n_ctx_seq(self._context))
        # Set by `enclave profile` to time each step; when None it costs one check per phase.
        self.tracer: StepTracer | None = None
        self._thread = threading.Thread(target=self._run, name="enclave-scheduler", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    def _create_context(self) -> llama_cpp.llama_context_p:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.config.kv_cache_tokens
        params.n_batch = self.config.batch_size
        params.n_ubatch = self.config.batch_size
        params.n_seq_max = self.config.parallel
        params.n_threads = self.config.threads
        params.n_threads_batch = self.config.threads
        params.kv_unified = self.config.kv_unified
        params.flash_attn_type = _FLASH_ATTENTION[self.config.flash_attention]
        params.no_perf = False
        context: llama_cpp.llama_context_p = llama_cpp.llama_init_from_model(
            self.model.pointer, params
        )
        if not context:
            raise EngineFailure(
                f"llama.cpp could not create a context of {self.config.kv_cache_tokens} tokens "
                f"for {self.config.parallel} sequences; lower engine.kv_cache_tokens or "
                "engine.parallel."
            )
        return context

    def _warm_up(self) -> None:
        """Decode one batch before serving, so the first request does not pay for set-up."""
        warm_tokens = self.model.tokenize("Hello, world. " * 8, add_special=True,
                                          parse_special=False)
        for position, token in enumerate(warm_tokens):
            self._put(position, token, position, 0, position == len(warm_tokens) - 1)
        self._batch.n_tokens = len(warm_tokens)
        status = compute.run(llama_cpp.llama_decode, self._context, self._batch)
        if status != 0:
            raise EngineFailure(f"llama_decode returned {status} while warming up")
        self._put(0, warm_tokens[-1], len(warm_tokens), 0, True)
        self._batch.n_tokens = 1
        compute.run(llama_cpp.llama_decode, self._context, self._batch)
        # llama.cpp adds decode time to its perf counters when it synchronizes. Without this
        # call, the first request's counters would include the idle time since warm-up.
        llama_cpp.llama_synchronize(self._context)
        llama_cpp.llama_memory_clear(self._memory, True)
        llama_cpp.llama_perf_context_reset(self._context)

    # Public interface, called from any thread.

    def start(self) -> None:
        """Start the scheduler thread and return once it has warmed up the context.

        All decoding, the warm-up included, happens on that one thread. llama.cpp's OpenMP
        build keeps a team of worker threads for each thread that decodes. Once the teams
        together outnumber the cores, OpenMP sleeps at every barrier instead of spinning,
        which cost about a third of decode speed on a 2-core machine.
        """
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join(timeout=10)
            raise self._start_error

    def submit(self, request: GenerationRequest, sink: Any) -> Sequence:
        """Queue a request; raise QueueFullError when no place is left.

        Raises InvalidRequestError for a prompt of no tokens: llama_decode rejects an empty
        batch, and that error would stop the engine for every request.
        """
        if not request.prompt_tokens:
            raise InvalidRequestError(
                "The prompt is empty, so there is no token to start generation from. Send "
                "a prompt of at least one character.",
                param="prompt",
            )
        sequence = Sequence(
            request=request,
            sink=sink,
            assembler=TextAssembler(request.stop),
            submitted_at=time.monotonic(),
        )
        with self._condition:
            if self._failure is not None:
                raise EngineUnavailableError(
                    f"The engine has stopped after an error ({self._failure}); restart the "
                    "server.",
                    retry_after_s=30,
                )
            if len(self._waiting) >= self.config.queue_size + self._free_slots:
                raise QueueFullError(self.config.queue_size, self._retry_after_s())
            self._waiting.append(sequence)
            self._condition.notify()
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """Ask for a sequence to end; its slot is freed at the start of the next step."""
        if not sequence.finished:
            sequence.cancelled = True
            with self._condition:
                self._condition.notify()

    def stop(self) -> None:
        """End every sequence, stop the thread and free the llama.cpp context."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._context)

    @property
    def failure(self) -> str | None:
        return self._failure

    def stats(self) -> dict[str, int]:
        """Return a snapshot of the slots and queue, for readiness and metrics."""
        active = [slot for slot in self.slots if slot.sequence is not None]
        return {
            "slots_total": len(self.slots),
            "slots_active": len(active),
            "queue_depth": len(self._waiting),
            "kv_cache_tokens": self.config.kv_cache_tokens,
            "kv_cached_tokens": sum(len(slot.tokens) for slot in self.slots),
            "kv_active_tokens": sum(len(slot.tokens) for slot in active),
            "kv_cells": self.kv_cells,
            "kv_cells_per_sequence": self.kv_cells_per_sequence,
        }

    def perf(self) -> PerfCounters | None:
        """Return llama.cpp's counters since the model was loaded; None once stopping."""
        with self._condition:
            # Holding the lock keeps stop() from freeing the context during the read.
            if self._stopping:
                return None
            data = llama_cpp.llama_perf_context(self._context)
        return PerfCounters(
            load_ms=float(data.t_load_ms),
            prompt_eval_ms=float(data.t_p_eval_ms),
            prompt_eval_tokens=int(data.n_p_eval),
            eval_ms=float(data.t_eval_ms),
            eval_tokens=int(data.n_eval),
        )

    def _retry_after_s(self) -> int:
        waves = (len(self._waiting) + 1) / max(1, self.config.parallel)
        return max(1, min(60, math.ceil(self._mean_request_s * waves)))

    # The scheduler thread.

    def _run(self) -> None:
        try:
            self._warm_up()
        except BaseException as error:
            self._start_error = error
            return
        finally:
            self._started.set()
        try:
            while self._wait_for_work():
                self._step()
        except Exception as exc:
            logger.exception("Scheduler stopped after an unexpected error")
            self._fail_everything(f"{type(exc).__name__}: {exc}")
        finally:
            if self._stopping:
                self._fail_everything("server shutting down")

    def _wait_for_work(self) -> bool:
        with self._condition:
            while not self._stopping and not self._waiting and self._free_slots == len(self.slots):
                self._condition.wait()
            return not self._stopping

    def _step(self) -> None:
        events: list[tuple[Sequence, Event]] = []
        now = time.monotonic()
        tracer = self.tracer
        mark = time.perf_counter() if tracer is not None else 0.0

        self._reap(now, events)
        self._admit(now, events)
        added, outputs = self._fill_batch()
        if tracer is not None:
            mark = _trace(tracer, "schedule", mark, added)
        if added:
            decoded = self._decode(added, events)
            if tracer is not None:
                mark = _trace(tracer, _decode_phase(added), mark, added)
            if decoded:
                self._sample(outputs, events)
                if tracer is not None:
                    mark = _trace(tracer, "sample", mark, added)

        if events:
            self._deliver(events)
            if tracer is not None:
                _trace(tracer, "deliver", mark, added)

    def _reap(self, now: float, events: list[tuple[Sequence, Event]]) -> None:
        """End cancelled and expired sequences, whether running or still waiting."""
        for slot in self.slots:
            sequence = slot.sequence
            if sequence is None:
                continue
            if sequence.cancelled:
                self._finish(sequence, "cancelled", events)
            elif sequence.request.deadline is not None and now > sequence.request.deadline:
                error = DeadlineExceededError(sequence.request.deadline_s or 0)
                self._fail(sequence, error, events)

        with self._condition:
            kept: deque[Sequence] = deque()
            for sequence in self._waiting:
                if sequence.cancelled:
                    self._finish(sequence, "cancelled", events)
                elif sequence.request.deadline is not None and now > sequence.request.deadline:
                    self._fail(
                        sequence, DeadlineExceededError(sequence.request.deadline_s or 0), events
                    )
                else:
                    kept.append(sequence)
            self._waiting = kept

    def _admit(self, now: float, events: list[tuple[Sequence, Event]]) -> None:
        while True:
            with self._condition:
                if not self._waiting or self._free_slots == 0:
                    return
                sequence = self._waiting.popleft()
                self._free_slots -= 1
            try:
                sequence.sampler = SamplerChain(sequence.request.params, self.model.vocab)
            except Exception as error:
                # One request's sampler must not take the engine down with it.
                if not isinstance(error, RequestError):
                    logger.exception("Could not build the sampler chain",
                                     extra={"request_id": sequence.request_id})
                    error = SamplerError()
                with self._condition:
                    self._free_slots += 1
                self._fail(sequence, error, events)
                continue
            # A fresh reading: the request may have arrived after this step began.
            self._place(sequence, time.monotonic())

    def _place(self, sequence: Sequence, now: float) -> None:
        """Put a sequence into the free slot that needs the least prefill."""
        prompt = sequence.request.prompt_tokens
        free = [slot for slot in self.slots if slot.sequence is None]
        # The longest cached prefix wins; among equals, the slot idle longest is overwritten.
        target = max(
            free, key=lambda slot: (common_prefix_length(slot.tokens, prompt), -slot.released_at)
        )
        # At least the last prompt token must be decoded again to get logits for sampling.
        reuse = min(common_prefix_length(target.tokens, prompt), len(prompt) - 1)

        donor, donor_length = self._longest_prefix_donor(prompt, exclude=target)
        donor_length = min(donor_length, len(prompt) - 1)
        if donor is not None and donor_length >= reuse + self._min_copy_gain:
            self._copy_prefix(donor, target, donor_length)
            reuse = donor_length

        if not llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, reuse, -1):
            # Some architectures (recurrent, sliding-window) cannot drop part of a sequence.
            self._clear(target)
            reuse = 0
        del target.tokens[reuse:]

        target.sequence = sequence
        sequence.slot = target
        sequence.prompt_done = reuse
        sequence.cached_tokens = reuse
        sequence.admitted_at = now
        logger.debug(
            "Admitted into slot %d with %d of %d prompt tokens cached",
            target.seq_id, reuse, len(prompt), extra={"request_id": sequence.request_id},
        )

    def _copy_prefix(self, donor: Slot, target: Slot, length: int) -> None:
        """Give target the first ``length`` cached tokens of donor."""
        self._clear(target)
        if self.config.kv_unified:
            # One buffer for all sequences: the cells are shared, nothing is copied.
            llama_cpp.llama_memory_seq_cp(self._memory, donor.seq_id, target.seq_id, 0, length)
        else:
            # Each sequence has its own buffer, and llama.cpp copies only whole buffers (at the
            # next decode). The positions past the prefix are dropped again at once.
            llama_cpp.llama_memory_seq_cp(self._memory, donor.seq_id, target.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, length, -1)
        target.tokens = donor.tokens[:length]

    def _longest_prefix_donor(self, prompt: list[int], exclude: Slot) -> tuple[Slot | None, int]:
        best: Slot | None = None
        best_length = 0
        for slot in self.slots:
            if slot is exclude:
                continue
            length = common_prefix_length(slot.tokens, prompt)
            if length > best_length:
                best, best_length = slot, length
        return best, best_length

    def _clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.tokens.clear()

    def _fill_batch(self) -> tuple[list[_Added], list[tuple[Sequence, int]]]:
        """Write the next batch; return what was added and the rows that produce logits."""
        batch = self._batch
        added: list[_Added] = []
        outputs: list[tuple[Sequence, int]] = []
        count = 0

        running = [slot.sequence for slot in self.slots if slot.sequence is not None]
        decoding = [s for s in running if s.pending_token is not None]
        prefilling = sorted(
            (s for s in running if s.in_prefill), key=lambda s: s.admitted_at or 0.0
        )

        for sequence in decoding:
            slot = sequence.slot
            assert slot is not None and sequence.pending_token is not None
            token = sequence.pending_token
            self._put(count, token, len(slot.tokens), slot.seq_id, True)
            outputs.append((sequence, count))
            added.append(_Added(sequence, 1, token))
            slot.tokens.append(token)
            sequence.pending_token = None
            count += 1

        budget = self.config.batch_size - count
        if decoding:
            budget = min(budget, self.config.prefill_chunk)
        for sequence in prefilling:
            if budget <= 0:
                break
            slot = sequence.slot
            assert slot is not None
            prompt = sequence.request.prompt_tokens
            take = min(budget, len(prompt) - sequence.prompt_done)
            chunk = prompt[sequence.prompt_done : sequence.prompt_done + take]
            completes = sequence.prompt_done + take == len(prompt)
            for offset, token in enumerate(chunk):
                last = completes and offset == take - 1
                self._put(count, token, len(slot.tokens) + offset, slot.seq_id, last)
                if last:
                    outputs.append((sequence, count))
                count += 1
            slot.tokens.extend(chunk)
            sequence.prompt_done += take
            added.append(_Added(sequence, take, None))
            budget -= take

        batch.n_tokens = count
        return added, outputs

    def _put(self, index: int, token: int, position: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = logits

    def _decode(self, added: list[_Added], events: list[tuple[Sequence, Event]]) -> bool:
        """Run the batch; return False when it was undone and must be rebuilt next step."""
        status = compute.run(llama_cpp.llama_decode, self._context, self._batch)
        if status == 0:
            return True
        if status == 1:
            self._recover_from_full_cache(added, events)
            return False
        raise EngineFailure(f"llama_decode returned {status}")

    def _recover_from_full_cache(
        self, added: list[_Added], events: list[tuple[Sequence, Event]]
    ) -> None:
        """Undo the batch and free cells: idle caches first, else the largest request."""
        for item in added:
            slot = item.sequence.slot
            assert slot is not None
            del slot.tokens[len(slot.tokens) - item.tokens :]
            if item.was_pending is not None:
                item.sequence.pending_token = item.was_pending
            else:
                item.sequence.prompt_done -= item.tokens

        idle = [slot for slot in self.slots if slot.sequence is None and slot.tokens]
        for slot in idle:
            self._clear(slot)
        logger.warning(
            "KV cache full (%d cells); dropped the cache of %d idle slots",
            self.config.kv_cache_tokens, len(idle),
        )
        if idle:
            return
        largest = max(
            (slot for slot in self.slots if slot.sequence is not None),
            key=lambda slot: len(slot.tokens),
        )
        assert largest.sequence is not None
        error = EngineUnavailableError(
            f"The KV cache ({self.config.kv_cache_tokens} tokens) is full with "
            f"{self.config.parallel} concurrent requests; retry later, or raise "
            "engine.kv_cache_tokens.",
            retry_after_s=self._retry_after_s(),
        )
        self._fail(largest.sequence, error, events)
        self._clear(largest)

    def _sample(
        self, outputs: list[tuple[Sequence, int]], events: list[tuple[Sequence, Event]]
    ) -> None:
        model = self.model
        now = time.monotonic()
        for sequence, row in outputs:
            assert sequence.sampler is not None
            token = sequence.sampler.sample(self._context, row)
            if sequence.first_token_at is None:
                sequence.first_token_at = now
            sequence.completion_tokens += 1

            if model.is_end_of_generation(token):
                self._finish(sequence, "stop", events)
                continue

            chunk = sequence.assembler.push(model.token_bytes(token))
            if chunk.text:
                events.append((sequence, TextDelta(chunk.text)))
            if chunk.stopped:
                self._finish(sequence, "stop", events, flush=False)
            elif self._at_limit(sequence):
                self._finish(sequence, "length", events)
            else:
                sequence.pending_token = token

    def _at_limit(self, sequence: Sequence) -> bool:
        request = sequence.request
        if request.max_tokens is not None and sequence.completion_tokens >= request.max_tokens:
            return True
        # The pending token still has to be decoded, so it needs a cell of its own. Without a
        # unified cache each sequence owns only its share of the cells.
        assert sequence.slot is not None
        return len(sequence.slot.tokens) + 1 >= self.kv_cells_per_sequence

    def _timings(self, sequence: Sequence, now: float) -> Timings:
        admitted = sequence.admitted_at or now
        first = sequence.first_token_at or now
        return Timings(
            queue_ms=(admitted - sequence.submitted_at) * 1000.0,
            prefill_ms=(first - admitted) * 1000.0 if sequence.admitted_at else 0.0,
            decode_ms=(now - first) * 1000.0 if sequence.first_token_at else 0.0,
            prompt_tokens=len(sequence.request.prompt_tokens),
            cached_tokens=sequence.cached_tokens,
            completion_tokens=sequence.completion_tokens,
        )

    def _finish(
        self,
        sequence: Sequence,
        reason: FinishReason,
        events: list[tuple[Sequence, Event]],
        *,
        flush: bool = True,
        error: RequestError | None = None,
    ) -> None:
        if sequence.finished:
            return
        sequence.finished = True
        now = time.monotonic()

        if flush and reason in ("stop", "length"):
            tail = sequence.assembler.finish()
            if tail:
                events.append((sequence, TextDelta(tail, tokens=0)))
        timings = self._timings(sequence, now)
        events.append((sequence, Finished(reason, timings, error)))

        if sequence.sampler is not None:
            sequence.sampler.close()
            sequence.sampler = None
        slot = sequence.slot
        if slot is not None:
            slot.sequence = None
            slot.released_at = now
            sequence.slot = None
            with self._condition:
                self._free_slots += 1
            elapsed = now - sequence.submitted_at
            self._mean_request_s = 0.8 * self._mean_request_s + 0.2 * elapsed

        logger.info(
            "Request finished: reason=%s prompt_tokens=%d cached_tokens=%d "
            "completion_tokens=%d queue_ms=%.1f prefill_ms=%.1f decode_ms=%.1f "
            "decode_tokens_per_s=%.1f",
            reason if error is None else f"error:{error.code}", timings.prompt_tokens,
            timings.cached_tokens, timings.completion_tokens, timings.queue_ms,
            timings.prefill_ms, timings.decode_ms, timings.decode_tokens_per_s,
            extra={"request_id": sequence.request_id},
        )

    def _fail(
        self, sequence: Sequence, error: RequestError, events: list[tuple[Sequence, Event]]
    ) -> None:
        self._finish(sequence, "error", events, error=error)

    def _fail_everything(self, reason: str) -> None:
        events: list[tuple[Sequence, Event]] = []
        error = EngineUnavailableError(
            f"The engine stopped ({reason}); retry after the server restarts.", retry_after_s=30
        )
        with self._condition:
            if not self._stopping:
                self._failure = reason
            waiting = list(self._waiting)
            self._waiting.clear()
        for sequence in waiting:
            self._fail(sequence, error, events)
        for slot in self.slots:
            if slot.sequence is not None:
                self._fail(slot.sequence, error, events)
        if events:
            self._deliver(events)


def _decode_phase(added: list[_Added]) -> str:
    """Name a batch after its contents: prompt chunks, generated tokens, or both."""
    has_prompt = any(item.was_pending is None for item in added)
    has_generated = any(item.was_pending is not None for item in added)
    if has_prompt and has_generated:
        return "prefill+decode"
    return "prefill" if has_prompt else "decode"


def _trace(tracer: StepTracer, phase: str, started: float, added: list[_Added]) -> float:
    """Report one phase to the tracer; return its end, the start of the next phase."""
    ended = time.perf_counter()
    prompt_tokens = sum(item.tokens for item in added if item.was_pending is None)
    generated_tokens = sum(1 for item in added if item.was_pending is not None)
    tracer.record(phase, started, ended, prompt_tokens, generated_tokens)
    return ended
