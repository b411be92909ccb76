"""POST /v1/chat/completions: plan the prompt, generate, and answer as JSON or SSE.

The answer is read by ``enclave.output``: DeepSeek-style ``<think>`` reasoning goes to
``reasoning_content`` (unless the request sets ``reasoning_format: "none"``), tool calls to
``tool_calls``, and ``response_format`` and forced tool calls are enforced by a grammar.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from enclave.api.lifecycle import accept, record_of
from enclave.api.openai.chat_stream import ChatChunkEncoder, finish_reason, stream_chat
from enclave.api.openai.protocol import ChatCompletionRequest, ChatMessage
from enclave.api.openai.service import (
    deadline_seconds,
    generation_request,
    new_id,
    sampling_params,
    usage,
)
from enclave.api.privacy import last_user_text
from enclave.api.restoring import output_parser
from enclave.api.state import AppState
from enclave.api.streaming import SSE_HEADERS, collect_text
from enclave.errors import ClientClosedError, UnsupportedParameterError
from enclave.output.parser import ChatOutput, collect
from enclave.output.plan import ChatSpec, OutputFormat, ToolChoice, plan_chat


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Convert request messages into the plain dicts chat templates expect."""
    converted = []
    for index, message in enumerate(messages):
        # Templates tell a call-only assistant turn by its content being None.
        content = None if message.content is None and message.tool_calls else message.text(index)
        entry: dict[str, Any] = {
            # Templates know "system"; "developer" is OpenAI's newer name for it.
            "role": "system" if message.role == "developer" else message.role,
            "content": content,
        }
        if message.name:
            entry["name"] = message.name
        if message.tool_calls:
            entry["tool_calls"] = message.tool_calls
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        if message.reasoning_content:
            # Templates of thinking models (Qwen 3) can show earlier reasoning; others ignore it.
            entry["reasoning_content"] = message.reasoning_content
        converted.append(entry)
    return converted


def chat_spec(body: ChatCompletionRequest, messages: list[dict[str, Any]]) -> ChatSpec:
    """Translate the OpenAI request into the protocol-neutral chat description.

    ``messages`` are the request's messages as the model may read them (after the privacy
    mode).
    """
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    forced = body.forced_function()
    if forced is not None:
        choice = ToolChoice("function", forced)
    elif isinstance(body.tool_choice, str):
        choice = ToolChoice(body.tool_choice)
    else:
        choice = ToolChoice()

    output_format = None
    response_format = body.response_format
    if response_format is not None and response_format.type == "json_object":
        output_format = OutputFormat(None, "response_format")
    elif response_format is not None and response_format.json_schema is not None:
        output_format = OutputFormat(response_format.json_schema.schema_,
                                     "response_format.json_schema.schema")

    return ChatSpec(
        messages=messages,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=bool(body.parallel_tool_calls),
        output_format=output_format,
        split_reasoning=body.reasoning_format != "none",
        template_kwargs=dict(body.chat_template_kwargs or {}),
        grammar=body.grammar,
    )


async def create_chat_completion(request: Request, body: ChatCompletionRequest,
                                 state: AppState) -> Response:
    body.log_ignored_fields("chat completion request")
    if body.grammar and not state.settings.engine.request_grammar:
        raise UnsupportedParameterError(
            "grammar", "grammar is switched off on this server (engine.request_grammar = "
            "false). Use response_format for JSON output, or ask the operator to enable it.",
        )
    timeout_s = deadline_seconds(request, state.settings.engine.request_timeout_s)
    messages = template_messages(body.messages)
    state.pool.registry.get(body.model)  # 404 for an unknown id; loads nothing
    protected = state.privacy.protect_chat(record_of(request), messages)
    # Before the engine is fetched, so that a key outside the model's scope cannot get it
    # loaded.
    record = await accept(request, model=body.model,
                          input_text=last_user_text(protected.logged_input), stream=body.stream)
    engine = await state.pool.get(body.model)

    spec = chat_spec(body, protected.model_input)
    plan = plan_chat(engine.template, spec, state.settings.engine.reasoning_for(body.model))
    params = dataclasses.replace(
        sampling_params(body, engine.model.n_vocab),
        grammar=plan.grammar,
        grammar_triggers=plan.grammar_triggers,
    )
    generation_input = generation_request(
        engine,
        engine.tokenize_prompt(plan.prompt),
        params,
        token_limit=body.token_limit(),
        stop=body.stop_strings(),
        timeout_s=timeout_s,
    )
    generation = engine.submit(generation_input)
    parser = output_parser(plan, protected)
    response_id, created = new_id("chatcmpl"), int(time.time())

    if body.stream:
        encoder = ChatChunkEncoder(response_id, created, body.model, body.include_usage())
        return StreamingResponse(
            stream_chat(generation, encoder, parser, body.include_usage(), record),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    text, finished = await collect_text(request, generation)
    if finished.reason == "cancelled":
        raise ClientClosedError()
    output = ChatOutput()
    collect(parser.push(text), output)
    collect(parser.finish(), output)
    return JSONResponse({
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": _message(output, parser.splits_reasoning),
            "logprobs": None,
            "finish_reason": finish_reason(parser, finished),
        }],
        "usage": usage(finished),
        "timings": finished.timings.as_dict(),
    })


def _message(output: ChatOutput, with_reasoning: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI sends null content for a reply that only calls tools.
        "content": output.content if output.content or not output.tool_calls else None,
    }
    if with_reasoning:
        message["reasoning_content"] = output.reasoning or None
    if output.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in output.tool_calls
        ]
    return message
