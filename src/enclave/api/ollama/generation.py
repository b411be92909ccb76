"""POST /api/chat and /api/generate: NDJSON streams by default, one JSON object otherwise.

Every chunk carries ``model``, ``created_at`` and ``done``. The last one adds ``done_reason``
and the counts and durations, in nanoseconds, that Ollama reports: ``total_duration`` from the
request's arrival, ``load_duration`` spent loading the model for this request,
``prompt_eval_duration`` (prefill) and ``eval_duration`` (decoding).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from enclave.api.lifecycle import RequestRecord, accept, note_finished, record_of
from enclave.api.ollama.protocol import ChatBody, GenerateBody, GenerationBody, generation_options
from enclave.api.openai.service import deadline_seconds, generation_request
from enclave.api.privacy import last_user_text
from enclave.api.restoring import output_parser
from enclave.api.state import AppState
from enclave.api.streaming import collect_text
from enclave.engine.llama_engine import Generation, LlamaEngine
from enclave.engine.types import Finished, TextDelta
from enclave.errors import ClientClosedError, ContextLengthError, InvalidRequestError
from enclave.output.parser import (
    ChatOutput,
    ChatOutputParser,
    ContentText,
    OutputEvent,
    ReasoningText,
    ToolCallOutput,
    collect,
)
from enclave.output.plan import (
    ChatPlan,
    ChatSpec,
    OutputFormat,
    ReasoningSetting,
    ToolChoice,
    model_thinks,
    plan_chat,
    plan_raw,
)

NDJSON_MEDIA_TYPE = "application/x-ndjson"
NS_PER_MS = 1_000_000


def ndjson(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def output_format(value: str | dict[str, Any] | None) -> OutputFormat | None:
    """Map Ollama's ``format`` ("json" or a JSON schema) to a structured-output request."""
    if not value:
        return None
    if value == "json":
        return OutputFormat(None, "format")
    assert isinstance(value, dict)
    return OutputFormat(value, "format")


@dataclasses.dataclass(slots=True)
class Timer:
    """When the request arrived, and how long loading its model took."""

    started: float = dataclasses.field(default_factory=time.perf_counter)
    load_ns: int = 0

    def metrics(self, finished: Finished) -> dict[str, int]:
        timings = finished.timings
        return {
            "total_duration": int((time.perf_counter() - self.started) * 1e9),
            "load_duration": self.load_ns,
            "prompt_eval_count": finished.prompt_tokens,
            "prompt_eval_duration": int(timings.prefill_ms * NS_PER_MS),
            "eval_count": finished.completion_tokens,
            "eval_duration": int(timings.decode_ms * NS_PER_MS),
        }


async def load_engine(state: AppState, model: str, timer: Timer) -> LlamaEngine:
    loading = time.perf_counter()
    was_loaded = model in state.pool.loaded()
    engine = await state.pool.get(model)
    if not was_loaded:
        timer.load_ns = int((time.perf_counter() - loading) * 1e9)
    return engine


def check_think(think: bool | None, engine: LlamaEngine, reasoning: ReasoningSetting,
                model: str) -> None:
    """Reject ``think: true`` for a model whose output is never split, as Ollama does."""
    if think and not model_thinks(engine.template, reasoning):
        reason = ("reasoning is switched off for it (engine.reasoning)" if reasoning == "off"
                  else "its chat template has no <think> block")
        raise InvalidRequestError(
            f"Model {model!r} does not support thinking: {reason}. Omit 'think' or send "
            "false.",
            param="think",
        )


async def chat(request: Request, body: ChatBody, state: AppState) -> Response:
    timer = Timer()
    body.check_supported()
    body.log_ignored_fields("Ollama chat request")
    timeout_s = deadline_seconds(request, state.settings.engine.request_timeout_s)
    protected = state.privacy.protect_chat(
        record_of(request),
        [message.neutral(index) for index, message in enumerate(body.messages)])
    # Before the model is loaded, so that a key outside its scope cannot get it loaded.
    record = await accept(request, model=body.model,
                          input_text=last_user_text(protected.logged_input), stream=body.stream)
    engine = await load_engine(state, body.model, timer)
    if not body.messages:
        return JSONResponse(_loaded(body.model, {"message": {"role": "assistant",
                                                             "content": ""}}))

    reasoning = state.settings.engine.reasoning_for(body.model)
    think = body.think_flag()
    check_think(think, engine, reasoning, body.model)
    spec = ChatSpec(
        messages=protected.model_input,
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
        tool_choice=ToolChoice(body.tool_choice or "auto"),
        output_format=output_format(body.format),
        split_reasoning=think is not False,
        enable_thinking=think,
    )
    plan = plan_chat(engine.template, spec, reasoning)
    generation = _submit(engine, body, plan, timeout_s)
    encoder = _ChatEncoder(body.model)
    return await _respond(request, body, generation, output_parser(plan, protected), encoder,
                          timer, record)


async def generate(request: Request, body: GenerateBody, state: AppState) -> Response:
    timer = Timer()
    body.check_supported()
    body.log_ignored_fields("Ollama generate request")
    timeout_s = deadline_seconds(request, state.settings.engine.request_timeout_s)
    messages = [{"role": "system", "content": body.system}] if body.system else []
    messages.append({"role": "user", "content": body.prompt})
    protected = state.privacy.protect_chat(record_of(request), messages)
    # Before the model is loaded, so that a key outside its scope cannot get it loaded.
    record = await accept(request, model=body.model,
                          input_text=last_user_text(protected.logged_input), stream=body.stream)
    engine = await load_engine(state, body.model, timer)
    if not body.prompt and not body.system:
        return JSONResponse(_loaded(body.model, {"response": ""}))

    reasoning = state.settings.engine.reasoning_for(body.model)
    think = body.think_flag()
    formatting = output_format(body.format)
    if body.raw:
        plan = plan_raw(last_user_text(protected.model_input), formatting)
    else:
        check_think(think, engine, reasoning, body.model)
        spec = ChatSpec(messages=protected.model_input, output_format=formatting,
                        split_reasoning=think is not False, enable_thinking=think)
        plan = plan_chat(engine.template, spec, reasoning)
    generation = _submit(engine, body, plan, timeout_s)
    encoder = _GenerateEncoder(body.model)
    return await _respond(request, body, generation, output_parser(plan, protected), encoder,
                          timer, record)


def _loaded(model: str, fields: dict[str, Any]) -> dict[str, Any]:
    # An empty request loads the model, and Ollama replies with done_reason "load".
    return {"model": model, "created_at": now_rfc3339(), **fields, "done": True,
            "done_reason": "load"}


def _submit(engine: LlamaEngine, body: GenerationBody, plan: ChatPlan,
            timeout_s: float | None) -> Generation:
    options = generation_options(body.options, engine.context_size)
    tokens = engine.tokenize_prompt(plan.prompt)

    # num_ctx and num_predict only shorten the generation: Ollama ends it at the context
    # window instead of rejecting the request.
    window = options.num_ctx or engine.context_size
    if len(tokens) >= window:
        raise ContextLengthError(len(tokens), 1, window)
    limit = window - len(tokens)
    if options.num_predict is not None:
        limit = min(limit, options.num_predict)
    elif engine.default_max_tokens:
        limit = min(limit, engine.default_max_tokens)

    params = dataclasses.replace(options.params, grammar=plan.grammar,
                                 grammar_triggers=plan.grammar_triggers)
    generation_input = generation_request(
        engine, tokens, params, token_limit=limit, stop=options.stop, timeout_s=timeout_s,
    )
    return engine.submit(generation_input)


async def _respond(request: Request, body: GenerationBody, generation: Generation,
                   parser: ChatOutputParser, encoder: _Encoder, timer: Timer,
                   record: RequestRecord) -> Response:
    if body.stream:
        return StreamingResponse(_stream(generation, parser, encoder, timer, record),
                                 media_type=NDJSON_MEDIA_TYPE)
    text, finished = await collect_text(request, generation)
    if finished.reason == "cancelled":
        raise ClientClosedError()
    output = ChatOutput()
    collect(parser.push(text), output)
    collect(parser.finish(), output)
    return JSONResponse(encoder.whole(output, finished, timer))


async def _stream(generation: Generation, parser: ChatOutputParser, encoder: _Encoder,
                  timer: Timer, record: RequestRecord) -> AsyncIterator[bytes]:
    finished: Finished | None = None
    try:
        async for event in generation:
            if isinstance(event, TextDelta):
                record.mark_output(event.text, event.tokens)
                for output in parser.push(event.text):
                    yield ndjson(encoder.chunk(output))
            else:
                finished = event
        assert finished is not None
        note_finished(record, finished)
        if finished.error is not None:
            yield ndjson({"error": finished.error.message})
            return
        for output in parser.finish():
            yield ndjson(encoder.chunk(output))
        yield ndjson(encoder.last(finished, timer))
    finally:
        generation.cancel()


class _Encoder:
    """Builds the JSON objects of one response; subclasses name the text fields."""

    def __init__(self, model: str) -> None:
        self.model = model

    def head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": now_rfc3339()}

    def chunk(self, event: OutputEvent) -> dict[str, Any]:
        raise NotImplementedError

    def last(self, finished: Finished, timer: Timer) -> dict[str, Any]:
        raise NotImplementedError

    def whole(self, output: ChatOutput, finished: Finished, timer: Timer) -> dict[str, Any]:
        raise NotImplementedError

    def tail(self, finished: Finished, timer: Timer) -> dict[str, Any]:
        return {"done": True, "done_reason": finished.reason, **timer.metrics(finished)}


def _ollama_call(event: ToolCallOutput) -> dict[str, Any]:
    arguments = event.call.arguments_object()
    return {
        "id": event.call.id,
        "function": {
            "index": event.index,
            "name": event.call.name,
            # Ollama clients expect an object; text that is not a JSON object is wrapped.
            "arguments": arguments if isinstance(arguments, dict) else {"value": arguments},
        },
    }


class _ChatEncoder(_Encoder):
    def chunk(self, event: OutputEvent) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if isinstance(event, ContentText):
            message["content"] = event.text
        elif isinstance(event, ReasoningText):
            message["thinking"] = event.text
        else:
            message["tool_calls"] = [_ollama_call(event)]
        return {**self.head(), "message": message, "done": False}

    def last(self, finished: Finished, timer: Timer) -> dict[str, Any]:
        return {**self.head(), "message": {"role": "assistant", "content": ""},
                **self.tail(finished, timer)}

    def whole(self, output: ChatOutput, finished: Finished, timer: Timer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": output.content}
        if output.reasoning:
            message["thinking"] = output.reasoning
        if output.tool_calls:
            message["tool_calls"] = [_ollama_call(ToolCallOutput(index, call))
                                     for index, call in enumerate(output.tool_calls)]
        return {**self.head(), "message": message, **self.tail(finished, timer)}


class _GenerateEncoder(_Encoder):
    def chunk(self, event: OutputEvent) -> dict[str, Any]:
        if isinstance(event, ReasoningText):
            return {**self.head(), "response": "", "thinking": event.text, "done": False}
        text = event.text if isinstance(event, ContentText) else ""
        return {**self.head(), "response": text, "done": False}

    def last(self, finished: Finished, timer: Timer) -> dict[str, Any]:
        return {**self.head(), "response": "", **self.tail(finished, timer)}

    def whole(self, output: ChatOutput, finished: Finished, timer: Timer) -> dict[str, Any]:
        body: dict[str, Any] = {**self.head(), "response": output.content}
        if output.reasoning:
            body["thinking"] = output.reasoning
        return {**body, **self.tail(finished, timer)}

