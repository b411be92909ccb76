"""POST /v1/completions: continue a prompt string, as JSON or SSE."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from enclave.api.lifecycle import RequestRecord, accept, note_finished, record_of
from enclave.api.openai.protocol import CompletionRequest
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
from enclave.errors import ClientClosedError
from enclave.policy import ProtectedRequest


async def create_completion(request: Request, body: CompletionRequest,
                            state: AppState) -> Response:
    body.log_ignored_fields("completion request")
    timeout_s = deadline_seconds(request, state.settings.engine.request_timeout_s)
    state.pool.registry.get(body.model)  # 404 for an unknown id; loads nothing
    protected = state.privacy.protect_prompt(record_of(request), body.prompt_text())
    # Before the engine is fetched, so that a key outside the model's scope cannot get it
    # loaded.
    record = await accept(request, model=body.model, input_text=protected.logged_input,
                          stream=body.stream)
    engine = await state.pool.get(body.model)
    tokens = engine.tokenize_prompt(protected.model_input)
    generation_input = generation_request(
        engine,
        tokens,
        sampling_params(body, engine.model.n_vocab),
        token_limit=body.max_tokens,
        stop=body.stop_strings(),
        timeout_s=timeout_s,
    )
    generation = engine.submit(generation_input)
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
            "model": body.model, "system_fingerprint": None}

    if body.stream:
        return StreamingResponse(
            _stream(generation, head, body.include_usage(), record, protected),
            media_type="text/event-stream", headers=SSE_HEADERS)

    text, finished = await collect_text(request, generation)
    if finished.reason == "cancelled":
        raise ClientClosedError()
    return JSONResponse({
        **head,
        "choices": [{"index": 0, "text": protected.output_for_caller(text), "logprobs": None,
                     "finish_reason": finished.reason}],
        "usage": usage(finished),
        "timings": finished.timings.as_dict(),
    })


def _choice(text: str, finish_reason: str | None) -> dict[str, object]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


async def _stream(generation: Generation, head: dict[str, object], include_usage: bool,
                  record: RequestRecord,
                  protected: ProtectedRequest[str]) -> AsyncIterator[bytes]:
    if include_usage:
        head = {**head, "usage": None}
    restorer = protected.stream_restorer()
    finished: Finished | None = None
    try:
        async for event in generation:
            if isinstance(event, TextDelta):
                record.mark_output(event.text, event.tokens)
                text = restorer.push(event.text)
                if text:
                    yield sse({**head, "choices": [_choice(text, None)]})
            else:
                finished = event
        assert finished is not None
        note_finished(record, finished)
        if finished.error is not None:
            yield sse_error(finished.error)
        else:
            rest = restorer.finish()
            if rest:
                yield sse({**head, "choices": [_choice(rest, None)]})
            yield sse({**head, "choices": [_choice("", finished.reason)]})
            if include_usage:
                yield sse({**head, "choices": [], "usage": usage(finished),
                           "timings": finished.timings.as_dict()})
        yield DONE
    finally:
        generation.cancel()
