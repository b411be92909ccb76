"""The in-process llama.cpp engine: one GGUF model, its chat template and its scheduler."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.config import EngineSettings
from enclave.engine.llama_model import LlamaModel
from enclave.engine.scheduler import Scheduler, SchedulerConfig, Sequence
from enclave.engine.templates import ChatTemplate, select_template
from enclave.engine.types import Event, Finished, GenerationRequest
from enclave.errors import InvalidRequestError

logger = logging.getLogger(__name__)


def available_cpus() -> int:
    """Return the CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_flash_attention(settings: EngineSettings) -> str:
    """Return on, off or auto (llama.cpp decides) for the context.

    On the CPU, flash attention's sums depend on how a prompt was split into batches, so the
    same request could answer differently after part of its prompt came from the cache.
    """
    if settings.flash_attention != "auto":
        return settings.flash_attention
    return "off" if settings.gpu_layers == 0 else "auto"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A loaded model, as the API reports it."""

    id: str
    path: Path
    architecture: str
    context_size: int
    n_ctx_train: int
    parallel: int
    size_bytes: int
    n_params: int
    created: int
    chat_template: str


class LlamaEngine:
    """Serves one GGUF model with continuous batching. Create it with load()."""

    def __init__(self, model_id: str, model: LlamaModel, template: ChatTemplate,
                 settings: EngineSettings) -> None:
        self.model = model
        self.template = template
        self.context_size = min(settings.context_size, model.n_ctx_train or settings.context_size)
        kv_tokens = max(settings.total_kv_tokens(), self.context_size)
        config = SchedulerConfig(
            parallel=settings.parallel,
            kv_cache_tokens=kv_tokens,
            kv_unified=settings.kv_unified,
            flash_attention=resolve_flash_attention(settings),
            batch_size=settings.batch_size,
            prefill_chunk=settings.prefill_chunk,
            queue_size=settings.queue_size,
            threads=settings.threads or available_cpus(),
        )
        self._outbox: queue.SimpleQueue[list[tuple[Sequence, Event]] | None] = (
            queue.SimpleQueue()
        )
        self._courier = threading.Thread(target=self._forward_events, name="enclave-courier",
                                         daemon=True)
        self._courier.start()
        self.scheduler = Scheduler(model, config, self._deliver)
        # Without a unified KV cache a sequence can use only its share of the cells.
        self.context_size = min(self.context_size, self.scheduler.kv_cells_per_sequence)
        # A longer prompt cannot fit in the context. It is rejected before tokenization,
        # which runs on the event loop and takes about 0.7 s and 130 MB per MB of text
        # (measured once with SmolLM2-135M on 2 CPU cores).
        self.max_prompt_chars = self.context_size * model.max_token_bytes
        self.info = ModelInfo(
            id=model_id,
            path=model.path,
            architecture=model.architecture,
            context_size=self.context_size,
            n_ctx_train=model.n_ctx_train,
            parallel=settings.parallel,
            size_bytes=model.size_bytes,
            n_params=model.n_params,
            created=int(model.path.stat().st_mtime),
            chat_template=template.source,
        )
        self.default_max_tokens = settings.default_max_tokens
        self.last_used = time.monotonic()
        try:
            self.scheduler.start()
        except BaseException:
            self.scheduler.stop()
            raise

    @classmethod
    def load(cls, model_id: str, path: Path, settings: EngineSettings) -> LlamaEngine:
        """Load the model and start its scheduler; blocking, so call it off the event loop."""
        started = time.perf_counter()
        repack = {"auto": None, "on": True, "off": False}[settings.repack_weights]
        model = LlamaModel(path, gpu_layers=settings.gpu_layers, repack=repack)
        try:
            template = select_template(
                model.chat_template,
                settings.chat_template,
                model_name=model_id,
                bos_token=model.bos_text,
                eos_token=model.eos_text,
            )
            engine = cls(model_id, model, template, settings)
        except Exception:
            model.close()
            raise
        logger.info(
            "Loaded model %s from %s in %.2f s (%s, %d layers, %.1f MB)",
            model_id, path, time.perf_counter() - started, model.architecture, model.n_layer,
            model.size_bytes / 1e6,
        )
        return engine

    def render_prompt(self, messages: list[dict[str, Any]], **extra: Any) -> str:
        """Render chat messages with the model's template."""
        return self.template.render(messages, **extra)

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize prompt text, adding BOS if the model wants it and the text lacks it."""
        if len(text) > self.max_prompt_chars:
            raise InvalidRequestError(
                f"The prompt has {len(text)} characters, more than fit in this model's context "
                f"window of {self.context_size} tokens. Shorten the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        bos = self.model.bos_text
        add_bos = self.model.add_bos and not (bos and text.startswith(bos))
        # NOTE: the rendered template is tokenized as one string with special tokens parsed,
        # as llama.cpp's server does, so special-token text typed inside a message (such as
        # "<|im_end|>") becomes that token and can end the user's turn early.
        tokens = self.model.tokenize(text, add_special=False, parse_special=True)
        return [self.model.bos_token, *tokens] if add_bos else tokens

    def stats(self) -> dict[str, int]:
        return self.scheduler.stats()

    @property
    def failure(self) -> str | None:
        return self.scheduler.failure

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a request; raise QueueFullError or EngineUnavailableError at once if refused."""
        self.last_used = time.monotonic()
        inbox: asyncio.Queue[Event] = asyncio.Queue()
        sequence = self.scheduler.submit(request, (asyncio.get_running_loop(), inbox))
        return Generation(self.scheduler, sequence, inbox)

    def _deliver(self, events: list[tuple[Sequence, Event]]) -> None:
        # Called on the scheduler thread, which must get back to llama_decode quickly. Waking
        # an event loop is a syscall that releases the GIL, and the woken loop would then hold
        # the GIL while the scheduler waits for it. The courier thread takes that wait
        # instead, while the scheduler is inside llama_decode.
        self._outbox.put(events)

    def _forward_events(self) -> None:
        """Run on the courier thread: hand each step's events to their event loops."""
        while (events := self._outbox.get()) is not None:
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]]
            by_loop = defaultdict(list)
            for sequence, event in events:
                loop, inbox = sequence.sink
                by_loop[loop].append((inbox, event))
            for loop, items in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_dispatch, items)
                except RuntimeError:
                    logger.debug("Dropped %d events for a closed event loop", len(items))

    def close(self) -> None:
        self.scheduler.stop()
        self._outbox.put(None)
        self._courier.join(timeout=10)
        self.model.close()


class Generation:
    """The events of one submitted request. Iterate once; cancel() ends it early."""

    def __init__(self, scheduler: Scheduler, sequence: Sequence, inbox: asyncio.Queue[Event]):
        self._scheduler = scheduler
        self._sequence = sequence
        self._inbox = inbox

    @property
    def finished(self) -> bool:
        return self._sequence.finished

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._inbox.get()
            yield event
            if isinstance(event, Finished):
                return

    def cancel(self) -> None:
        """End the generation at the next scheduler step; harmless once finished."""
        self._scheduler.cancel(self._sequence)


def _dispatch(items: list[tuple[asyncio.Queue[Event], Event]]) -> None:
    for inbox, event in items:
        inbox.put_nowait(event)
