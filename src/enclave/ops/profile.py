"""Where a request's time goes: a short workload, timed per phase, with a Chrome trace.

Two modes:

* in process (``profile_in_process``): loads the model with the real engine and scheduler,
  times template rendering and tokenization around each request, and times every scheduler
  step's phases through the scheduler's ``tracer`` hook (schedule, prefill, decode, sample,
  deliver). It also reads llama.cpp's own counters (``llama_perf_context``).
* against a server (``profile_server``): streams the same workload over HTTP. Each request's
  client-side time is split into the server's queue, prefill and decode (the ``timings`` the
  server sends in its usage chunk) and the rest. The rest is HTTP, JSON and SSE encoding,
  template rendering and tokenization on the server, and the network.

Both return a ``ProfileReport`` whose ``trace`` is in the Chrome trace event format
(complete events, ``"ph": "X"``, microseconds), which chrome://tracing and Perfetto open.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from enclave.config import EngineSettings
from enclave.engine.llama_engine import LlamaEngine
from enclave.engine.sampling import SamplingParams
from enclave.engine.scheduler import PerfCounters
from enclave.engine.types import Finished, GenerationRequest, TextDelta, Timings
from enclave.errors import EnclaveError

DEFAULT_PROMPT = "Explain in a few paragraphs how a bank checks a new customer's identity."
SCHEDULER_TRACK = 1
FIRST_REQUEST_TRACK = 2
# Phases in the order a request meets them; the report lists them in this order.
PHASE_ORDER = (
    "template rendering", "tokenization", "schedule", "prefill", "prefill+decode", "decode",
    "sample", "deliver", "server queue", "server prefill", "server decode",
    "HTTP and serialisation",
)


class ProfileError(EnclaveError):
    """The profiled server could not be reached or returned an error."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A profiling workload: ``requests`` chat requests, ``concurrency`` of them at a time."""

    requests: int = 4
    concurrency: int = 1
    max_tokens: int = 64
    prompt: str = DEFAULT_PROMPT
    # Ban end-of-generation tokens so every completion has max_tokens tokens (in process only).
    ignore_eos: bool = True

    def messages(self, index: int) -> list[dict[str, Any]]:
        # Each request starts with its own number, so later requests cannot reuse the whole
        # prompt from the KV cache. The chat template's own prefix is still shared.
        return [{"role": "user", "content": f"Request {index + 1}. {self.prompt}"}]


@dataclass(slots=True)
class PhaseTotal:
    """The time spent in one phase over the whole workload."""

    name: str
    seconds: float = 0.0
    count: int = 0


@dataclass(slots=True)
class RequestResult:
    """Measurements of one request of the workload."""

    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None
    duration_s: float


@dataclass(slots=True)
class ProfileReport:
    """The outcome of a profile run."""

    model: str
    wall_s: float
    phases: list[PhaseTotal]
    results: list[RequestResult]
    trace: dict[str, Any]
    perf: PerfCounters | None = None
    load_s: float | None = None

    def write_trace(self, path: Path) -> None:
        path.write_text(json.dumps(self.trace), encoding="utf-8")


@dataclass
class TraceRecorder:
    """Collects Chrome trace events and per-phase totals; also the scheduler's StepTracer."""

    origin: float = field(default_factory=time.perf_counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, PhaseTotal] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, phase: str, started_s: float, ended_s: float, prompt_tokens: int,
               generated_tokens: int) -> None:
        """Record one scheduler phase (called on the scheduler thread)."""
        self.span(phase, started_s, ended_s, SCHEDULER_TRACK, category="scheduler",
                  args={"prompt_tokens": prompt_tokens, "generated_tokens": generated_tokens})

    def span(self, name: str, started_s: float, ended_s: float, track: int, *,
             category: str = "request", args: dict[str, Any] | None = None,
             count: bool = True) -> None:
        """Record a complete event; ``count=False`` keeps it out of the phase totals."""
        event = {
            "name": name,
            "cat": category,
            "ph": "X",
            "ts": round((started_s - self.origin) * 1e6, 3),
            "dur": round(max(0.0, ended_s - started_s) * 1e6, 3),
            "pid": 1,
            "tid": track,
            "args": args or {},
        }
        with self._lock:
            self.events.append(event)
            if count:
                total = self.totals.setdefault(name, PhaseTotal(name))
                total.seconds += max(0.0, ended_s - started_s)
                total.count += 1

    def chrome_trace(self, tracks: dict[int, str]) -> dict[str, Any]:
        """Return the trace as a JSON-ready dict, with a name for every track."""
        names = [
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": track, "args": {"name": name}}
            for track, name in sorted(tracks.items())
        ]
        with self._lock:
            events = list(self.events)
        return {"traceEvents": names + events, "displayTimeUnit": "ms"}

    def phase_totals(self) -> list[PhaseTotal]:
        with self._lock:
            totals = dict(self.totals)
        order = {name: index for index, name in enumerate(PHASE_ORDER)}
        return sorted(totals.values(), key=lambda total: order.get(total.name, len(order)))


# In process.


def profile_in_process(model_id: str, model_path: Path, settings: EngineSettings,
                       workload: Workload) -> ProfileReport:
    """Load the model, run the workload through the real scheduler, and time every phase."""
    recorder = TraceRecorder()
    load_started = time.perf_counter()
    engine = LlamaEngine.load(model_id, model_path, settings)
    load_ended = time.perf_counter()
    recorder.span("model load", load_started, load_ended, SCHEDULER_TRACK, count=False)
    try:
        engine.scheduler.tracer = recorder
        started = time.perf_counter()
        results = asyncio.run(_run_in_process(engine, workload, recorder))
        wall_s = time.perf_counter() - started
        engine.scheduler.tracer = None
        perf = engine.scheduler.perf()
    finally:
        engine.close()

    tracks = {SCHEDULER_TRACK: "scheduler"} | _request_tracks(workload.requests)
    return ProfileReport(
        model=model_id,
        wall_s=wall_s,
        phases=recorder.phase_totals(),
        results=results,
        trace=recorder.chrome_trace(tracks),
        perf=perf,
        load_s=load_ended - load_started,
    )


async def _run_in_process(engine: LlamaEngine, workload: Workload,
                          recorder: TraceRecorder) -> list[RequestResult]:
    params = SamplingParams(temperature=0.0, logit_bias=_eog_bias(engine) if
                            workload.ignore_eos else {})
    limit = asyncio.Semaphore(workload.concurrency)

    async def one(index: int) -> RequestResult:
        async with limit:
            return await _generate(engine, workload, index, params, recorder)

    return list(await asyncio.gather(*(one(index) for index in range(workload.requests))))


def _eog_bias(engine: LlamaEngine) -> dict[int, float]:
    """Return a logit bias that bans every end-of-generation token of the model."""
    model = engine.model
    return {token: float("-inf") for token in range(model.n_vocab)
            if model.is_end_of_generation(token)}


async def _generate(engine: LlamaEngine, workload: Workload, index: int,
                    params: SamplingParams, recorder: TraceRecorder) -> RequestResult:
    track = FIRST_REQUEST_TRACK + index
    started = time.perf_counter()
    prompt = engine.render_prompt(workload.messages(index))
    rendered = time.perf_counter()
    tokens = engine.tokenize_prompt(prompt)
    tokenized = time.perf_counter()
    recorder.span("template rendering", started, rendered, track)
    recorder.span("tokenization", rendered, tokenized, track)

    request = GenerationRequest(request_id=f"profile-{index + 1}", prompt_tokens=tokens,
                                params=params, max_tokens=workload.max_tokens)
    generation = engine.submit(request)
    first_token_at: float | None = None
    finished: Finished | None = None
    async for event in generation:
        if isinstance(event, TextDelta):
            if first_token_at is None:
                first_token_at = time.perf_counter()
        else:
            finished = event
    ended = time.perf_counter()
    assert finished is not None
    if finished.error is not None:
        raise finished.error

    _engine_spans(recorder, track, tokenized, finished.timings)
    recorder.span("request", started, ended, track, count=False,
                  args={"prompt_tokens": finished.prompt_tokens,
                        "completion_tokens": finished.completion_tokens})
    return RequestResult(
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        time_to_first_token_s=None if first_token_at is None else first_token_at - started,
        duration_s=ended - started,
    )


def _engine_spans(recorder: TraceRecorder, track: int, submitted: float,
                  timings: Timings) -> None:
    """Draw a request's queue, prefill and decode intervals on its own track.

    They are not counted in the totals: the scheduler track already counts the compute, and
    these intervals overlap with other requests' when several run at once.
    """
    queue_end = submitted + timings.queue_ms / 1000.0
    prefill_end = queue_end + timings.prefill_ms / 1000.0
    decode_end = prefill_end + timings.decode_ms / 1000.0
    recorder.span("queued", submitted, queue_end, track, count=False)
    recorder.span("prefilling", queue_end, prefill_end, track, count=False,
                  args={"prompt_tokens": timings.prompt_tokens,
                        "cached_tokens": timings.cached_tokens})
    recorder.span("decoding", prefill_end, decode_end, track, count=False,
                  args={"completion_tokens": timings.completion_tokens})


def _request_tracks(requests: int) -> dict[int, str]:
    return {FIRST_REQUEST_TRACK + index: f"request {index + 1}" for index in range(requests)}


# Against a running server.


def profile_server(base_url: str, workload: Workload, *, model: str | None = None,
                   api_key: str | None = None, timeout_s: float = 300.0) -> ProfileReport:
    """Stream the workload from a running server and split each request's time."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base_url = base_url.rstrip("/")
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s) as client:
        model_id = model or _first_model(client, base_url)
    recorder = TraceRecorder()
    started = time.perf_counter()
    results = asyncio.run(_run_against_server(base_url, headers, model_id, workload, recorder,
                                              timeout_s))
    wall_s = time.perf_counter() - started
    return ProfileReport(
        model=model_id,
        wall_s=wall_s,
        phases=recorder.phase_totals(),
        results=results,
        trace=recorder.chrome_trace(_request_tracks(workload.requests)),
    )


def _first_model(client: httpx.Client, base_url: str) -> str:
    try:
        response = client.get("/v1/models")
    except httpx.TransportError as exc:
        raise ProfileError(f"Cannot reach {base_url} ({exc}); check --url and that "
                           "`enclave serve` is running.") from None
    _raise_for_status(response, base_url)
    models = response.json().get("data") or []
    if not models:
        raise ProfileError(f"{base_url}/v1/models lists no model; pass --model.")
    return str(models[0]["id"])


def _raise_for_status(response: httpx.Response, base_url: str) -> None:
    if response.status_code >= 400:
        raise ProfileError(
            f"{base_url}{response.request.url.path} returned HTTP {response.status_code}: "
            f"{response.text[:300]}. Check --url, --model and --api-key."
        )


async def _run_against_server(base_url: str, headers: dict[str, str], model: str,
                              workload: Workload, recorder: TraceRecorder,
                              timeout_s: float) -> list[RequestResult]:
    limit = asyncio.Semaphore(workload.concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers,
                                 timeout=timeout_s) as client:

        async def one(index: int) -> RequestResult:
            async with limit:
                return await _stream_request(client, base_url, model, workload, index,
                                             recorder)

        return list(await asyncio.gather(*(one(index) for index in range(workload.requests))))


async def _stream_request(client: httpx.AsyncClient, base_url: str, model: str,
                          workload: Workload, index: int,
                          recorder: TraceRecorder) -> RequestResult:
    body = {
        "model": model,
        "messages": workload.messages(index),
        "max_tokens": workload.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first_token_at: float | None = None
    last_chunk: dict[str, Any] = {}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for_status(response, base_url)
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                if first_token_at is None and _has_content(chunk):
                    first_token_at = time.perf_counter()
                if "error" in chunk:
                    raise ProfileError(f"Request {index + 1} failed: {chunk['error']}")
                last_chunk = chunk
    except httpx.TransportError as exc:
        raise ProfileError(f"Request {index + 1} to {base_url} failed: {exc}") from None
    ended = time.perf_counter()

    timings = last_chunk.get("timings")
    usage = last_chunk.get("usage") or {}
    if not timings:
        raise ProfileError(f"{base_url} sent no timings in its usage chunk; it is not an "
                           "Enclave server, or an older one.")
    _server_spans(recorder, FIRST_REQUEST_TRACK + index, started, ended, timings)
    return RequestResult(
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        time_to_first_token_s=None if first_token_at is None else first_token_at - started,
        duration_s=ended - started,
    )


def _has_content(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _server_spans(recorder: TraceRecorder, track: int, started: float, ended: float,
                  timings: dict[str, Any]) -> None:
    """Split one request's client-side time into the server's phases and the rest.

    The server reports durations, not times on the client's clock. So its phases are drawn
    ending when the last chunk arrived, and the time before them is HTTP and serialisation.
    """
    queue_s = float(timings.get("queue_ms", 0.0)) / 1000.0
    prefill_s = float(timings.get("prefill_ms", 0.0)) / 1000.0
    decode_s = float(timings.get("decode_ms", 0.0)) / 1000.0
    decode_start = ended - decode_s
    prefill_start = decode_start - prefill_s
    queue_start = max(started, prefill_start - queue_s)
    recorder.span("HTTP and serialisation", started, queue_start, track)
    recorder.span("server queue", queue_start, prefill_start, track)
    recorder.span("server prefill", prefill_start, decode_start, track)
    recorder.span("server decode", decode_start, ended, track)
    recorder.span("request", started, ended, track, count=False)


def phase_shares(report: ProfileReport) -> dict[str, float]:
    """Return each phase's total as a share of the workload's wall time."""
    if report.wall_s <= 0:
        return {}
    return {total.name: total.seconds / report.wall_s for total in report.phases}

