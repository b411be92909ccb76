"""Tool calls through the OpenAI SDK: forced calls, streamed deltas and tool results."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                      "parameters": WEATHER_PARAMETERS}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                      "parameters": {"type": "object", "properties": {
                                          "zone": {"type": "string"}}, "required": ["zone"]}}},
]
QUESTION: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_required_choice_returns_valid_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, tools=TOOLS, tool_choice="required",
        temperature=0, max_tokens=120,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name in ("get_weather", "get_time")
    parameters = next(tool["function"]["parameters"] for tool in TOOLS
                      if tool["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), parameters)


def test_named_choice_calls_that_function(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0, max_tokens=80,
    )
    calls = response.choices[0].message.tool_calls
    assert calls is not None
    assert [call.function.name for call in calls] == ["get_time"]
    jsonschema.validate(json.loads(calls[0].function.arguments),
                        TOOLS[1]["function"]["parameters"])
    assert response.choices[0].finish_reason == "tool_calls"


def test_streamed_call_names_function_first(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=80, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [chunk.choices[0].delta.tool_calls for chunk in chunks
              if chunk.choices and chunk.choices[0].delta.tool_calls]
    assert len(deltas) >= 2
    first = deltas[0][0]
    assert first.index == 0
    assert first.id is not None and first.id.startswith("call_")
    assert first.function is not None
    assert first.function.name == "get_weather"
    later = [delta[0] for delta in deltas[1:]]
    assert all(item.id is None for item in later)
    arguments = "".join(item.function.arguments or "" for item in later if item.function)
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)

    finish = [chunk.choices[0].finish_reason for chunk in chunks
              if chunk.choices and chunk.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


def test_tool_result_is_accepted(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_abc", "type": "function",
            "function": {"name": "get_weather",
                         "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"temperature": 22}'},
    ]
    response = client.chat.completions.create(model=DEFAULT_MODEL, messages=messages,
                                              tools=TOOLS, temperature=0, max_tokens=30)
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls


def test_parallel_calls_when_requested(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
        tools=TOOLS[:1], tool_choice="required", parallel_tool_calls=True,
        temperature=0, max_tokens=90,
    )
    calls = response.choices[0].message.tool_calls or []
    assert len(calls) >= 1
    assert len({call.id for call in calls}) == len(calls)
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
])
def test_invalid_tools_rejected(server: ServerProcess, extra: dict[str, Any], param: str) -> None:
    response = server.post("/v1/chat/completions",
                           json={"model": DEFAULT_MODEL, "messages": QUESTION, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
