"""Server-sent events framing and the helpers that tie a generation to its HTTP connection."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import Request

from enclave.api.errors import request_error_body
from enclave.api.lifecycle import note_finished, record_of
from enclave.engine.llama_engine import Generation
from enclave.engine.types import Finished, TextDelta
from enclave.errors import RequestError

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """Frame one JSON object as a server-sent event."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


def sse_error(error: RequestError) -> bytes:
    """Frame an error that happened after the stream had started."""
    return sse(request_error_body(error))


async def watch_disconnect(request: Request, generation: Generation) -> None:
    """Cancel a generation when the client goes away before the response is sent.

    Used for non-streaming responses: the body has been read, so the next ASGI message is
    the disconnect (or nothing, if the response completes first and this task is cancelled).
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if not generation.finished:
                logger.info("Client disconnected; cancelling the generation")
                generation.cancel()
            return


class DisconnectWatch:
    """Run watch_disconnect() for the duration of a ``with`` block."""

    def __init__(self, request: Request, generation: Generation) -> None:
        self._task = asyncio.create_task(watch_disconnect(request, generation))

    def __enter__(self) -> DisconnectWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self._task.cancel()


async def collect_text(request: Request, generation: Generation) -> tuple[str, Finished]:
    """Gather a whole generation; raise its error, cancel it if the client disconnects."""
    record = record_of(request)
    parts: list[str] = []
    finished: Finished | None = None
    with DisconnectWatch(request, generation):
        async for event in generation:
            if isinstance(event, TextDelta):
                parts.append(event.text)
                record.mark_output(event.text, event.tokens)
            else:
                finished = event
    assert finished is not None
    note_finished(record, finished)
    if finished.error is not None:
        raise finished.error
    return "".join(parts), finished
