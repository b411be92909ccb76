"""Server-sent events of a streamed chat completion (chat.completion.chunk objects)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from enclave.api.lifecycle import RequestRecord, note_finished
from enclave.api.openai.service import usage
from enclave.api.streaming import DONE, sse, sse_error
from enclave.engine.llama_engine import Generation
from enclave.engine.types import Finished, TextDelta
from enclave.output.parser import (
    ChatOutputParser,
    ContentText,
    OutputEvent,
    ReasoningText,
    ToolCallOutput,
)


def finish_reason(parser: ChatOutputParser, finished: Finished) -> str:
    """Return the OpenAI finish_reason: tool_calls when the model ended by calling tools."""
    if parser.has_tool_calls and finished.reason == "stop":
        return "tool_calls"
    return finished.reason


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

    def output(self, event: OutputEvent) -> bytes:
        """Encode one parsed event; a tool call becomes two chunks.

        The first chunk of a call carries its id and function name with empty arguments,
        the second the arguments: clients such as Cherry Studio start a call only on a delta
        that names the function.
        """
        if isinstance(event, ContentText):
            return self.content(event.text)
        if isinstance(event, ReasoningText):
            return self.delta({"reasoning_content": event.text})
        return self._tool_call(event)

    def _tool_call(self, event: ToolCallOutput) -> bytes:
        call = event.call
        start = {
            "index": event.index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        arguments = {"index": event.index, "function": {"arguments": call.arguments}}
        return self.delta({"tool_calls": [start]}) + self.delta({"tool_calls": [arguments]})

    def usage(self, finished: Finished) -> bytes:
        return sse({**self._head, "choices": [], "usage": usage(finished),
                    "timings": finished.timings.as_dict()})


async def stream_chat(generation: Generation, encoder: ChatChunkEncoder,
                      parser: ChatOutputParser, include_usage: bool,
                      record: RequestRecord) -> AsyncIterator[bytes]:
    """Yield the SSE body: a role chunk, the deltas, the finish chunk, usage, [DONE]."""
    finished: Finished | None = None
    try:
        yield encoder.delta({"role": "assistant", "content": ""})
        async for event in generation:
            if isinstance(event, TextDelta):
                record.mark_output(event.text, event.tokens)
                for output in parser.push(event.text):
                    yield encoder.output(output)
            else:
                finished = event
        assert finished is not None
        note_finished(record, finished)
        if finished.error is not None:
            yield sse_error(finished.error)
        else:
            for output in parser.finish():
                yield encoder.output(output)
            yield encoder.delta({}, finish_reason=finish_reason(parser, finished))
            if include_usage:
                yield encoder.usage(finished)
        yield DONE
    finally:
        generation.cancel()
