"""POST /v1/chat/completions: render messages, generate, and answer as JSON or SSE."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from enclave.api.lifecycle import RequestRecord, accept, note_finished
from enclave.api.openai.protocol import ChatCompletionRequest, ChatMessage
from enclave.api.openai.service import (
    deadline_seconds,
    generation_request,
    new_id,
    sampling_params,
    usage,
)
from enclave.api.state import AppState
from enclave.api.streaming import DONE, SSE_HEADERS, collect_text, sse, sse_error
from enclave.engine.llama_engine import Generation
from enclave.engine.types import Finished, TextDelta
from enclave.errors import EngineUnavailableError, UnsupportedParameterError


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Convert request messages into the plain dicts chat templates expect."""
    converted = []
    for index, message in enumerate(messages):
        entry: dict[str, Any] = {
            # Templates know "system"; "developer" is OpenAI's newer name for it.
            "role": "system" if message.role == "developer" else message.role,
            "content": message.text(index),
        }
        if message.name:
            entry["name"] = message.name
        if message.tool_calls:
            entry["tool_calls"] = message.tool_calls
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        converted.append(entry)
    return converted


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Return the newest user message: the query an audit excerpt shows."""
    for message in reversed(messages):
        if message["role"] == "user":
            return str(message["content"])
    return ""


def _reject_unimplemented(body: ChatCompletionRequest) -> None:
    if body.tools:
        raise UnsupportedParameterError("tools", "tools are not supported yet. Omit them.")
    kind = (body.response_format or {}).get("type", "text")
    if kind != "text":
        raise UnsupportedParameterError(
            "response_format", f"response_format type {kind!r} is not supported yet; use 'text'."
        )


class ChatChunkEncoder:
    """Builds chat.completion.chunk events; the content path only fills in the text."""

    def __init__(self, response_id: str, created: int, model: str, include_usage: bool) -> None:
        head: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        if include_usage:
            head["usage"] = None
        self._head = head
        prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
        self._content_prefix = (prefix + ',"choices":[{"index":0,"delta":{"content":').encode()
        self._content_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse({**self._head, "choices": [choice]})

    def content(self, text: str) -> bytes:
        return (b"data: " + self._content_prefix
                + json.dumps(text, ensure_ascii=False).encode() + self._content_suffix)

    def usage(self, finished: Finished) -> bytes:
        return sse({**self._head, "choices": [], "usage": usage(finished),
                    "timings": finished.timings.as_dict()})


async def create_chat_completion(request: Request, body: ChatCompletionRequest,
                                 state: AppState) -> Response:
    _reject_unimplemented(body)
    body.log_ignored_fields("chat completion request")
    engine = await state.pool.get(body.model)

    messages = template_messages(body.messages)
    prompt = engine.render_prompt(messages)
    tokens = engine.tokenize_prompt(prompt)
    generation_input = generation_request(
        engine,
        tokens,
        sampling_params(body, engine.model.n_vocab),
        token_limit=body.token_limit(),
        stop=body.stop_strings(),
        timeout_s=deadline_seconds(request, state.settings.engine.request_timeout_s),
    )
    record = accept(request, model=body.model, input_text=last_user_text(messages),
                    stream=body.stream)
    generation = engine.submit(generation_input)
    response_id, created = new_id("chatcmpl"), int(time.time())

    if body.stream:
        encoder = ChatChunkEncoder(response_id, created, body.model, body.include_usage())
        return StreamingResponse(
            _stream(generation, encoder, body.include_usage(), record),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    return await _complete(request, generation, response_id, created, body.model)


async def _stream(generation: Generation, encoder: ChatChunkEncoder, include_usage: bool,
                  record: RequestRecord) -> AsyncIterator[bytes]:
    finished: Finished | None = None
    try:
        yield encoder.delta({"role": "assistant", "content": ""})
        async for event in generation:
            if isinstance(event, TextDelta):
                record.mark_output(event.text, event.tokens)
                yield encoder.content(event.text)
            else:
                finished = event
        assert finished is not None
        note_finished(record, finished)
        if finished.error is not None:
            yield sse_error(finished.error)
        else:
            yield encoder.delta({}, finish_reason=finished.reason)
            if include_usage:
                yield encoder.usage(finished)
        yield DONE
    finally:
        generation.cancel()


async def _complete(request: Request, generation: Generation, response_id: str, created: int,
                    model: str) -> Response:
    text, finished = await collect_text(request, generation)
    if finished.reason == "cancelled":
        raise EngineUnavailableError("The generation was cancelled.", code="cancelled")
    return JSONResponse({
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finished.reason,
        }],
        "usage": usage(finished),
        "timings": finished.timings.as_dict(),
    })
