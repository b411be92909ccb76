"""The Ollama-compatible API driven by the official ollama client against the real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url, timeout=120) as ollama_client:
        yield ollama_client


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_ollama_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body["error"]


def test_root_reports_running(server: ServerProcess) -> None:
    response = server.get("/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert httpx.head(server.base_url + "/").status_code == 200


def test_version_and_tags(client: ollama.Client, server: ServerProcess) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", server.get("/api/version").json()["version"])
    listed = {model.model: model for model in client.list().models}
    model = listed[DEFAULT_MODEL]
    assert model.size is not None and model.size > 50_000_000
    assert model.details is not None
    assert model.details.format == "gguf"
    assert model.details.family == "llama"
    assert model.details.quantization_level == "Q4_1"
    raw = server.get("/api/tags").json()["models"][0]
    assert raw["name"] == raw["model"] == DEFAULT_MODEL
    assert re.fullmatch(r"[0-9a-f]{64}", raw["digest"])
    assert raw["modified_at"].endswith("Z")


def test_show_reports_served_context(client: ollama.Client, server: ServerProcess) -> None:
    shown = client.show(DEFAULT_MODEL)
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 4096  # the served context, not 8192
    assert shown.modelinfo["general.parameter_count"] > 100_000_000
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details is not None
    assert shown.details.parameter_size == "135M"
    assert shown.template is not None and "<|im_start|>" in shown.template
    # Older clients send "name"; a ":latest" tag names the same model.
    legacy = server.post("/api/show", json={"name": DEFAULT_MODEL + ":latest"})
    assert legacy.status_code == 200
    assert legacy.json()["model_info"]["llama.context_length"] == 4096


def test_ps_lists_loaded_model(client: ollama.Client) -> None:
    running = {model.model: model for model in client.ps().models}
    assert running[DEFAULT_MODEL].context_length == 4096
    assert running[DEFAULT_MODEL].size_vram == 0


def test_chat_reports_counts_in_nanoseconds(client: ollama.Client) -> None:
    response = client.chat(model=DEFAULT_MODEL, messages=ask("Tell me about the sea."),
                           options={"temperature": 0, "num_predict": 8})
    assert response.done is True
    assert response.done_reason == "length"
    assert response.message.role == "assistant"
    assert response.message.content
    assert response.eval_count == 8
    assert response.prompt_eval_count is not None and response.prompt_eval_count > 10
    assert response.load_duration == 0  # the model was already loaded
    assert response.eval_duration is not None and response.eval_duration > 1_000_000
    assert response.prompt_eval_duration is not None and response.prompt_eval_duration > 0
    assert response.total_duration is not None
    assert response.total_duration >= response.eval_duration + response.prompt_eval_duration


def test_chat_stream_matches_whole(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 20}
    whole = client.chat(model=DEFAULT_MODEL, messages=ask("Name three rivers."), options=options)
    chunks = list(client.chat(model=DEFAULT_MODEL, messages=ask("Name three rivers."),
                              options=options, stream=True))
    assert "".join(chunk.message.content or "" for chunk in chunks) == whole.message.content
    assert all(chunk.done is False for chunk in chunks[:-1])
    last = chunks[-1]
    assert last.done is True
    assert last.done_reason == "length"
    assert last.eval_count == 20
    for name in METRICS:
        assert isinstance(last[name], int), name


def test_streaming_is_the_default(server: ServerProcess) -> None:
    response = server.post("/api/generate", json={
        "model": DEFAULT_MODEL, "prompt": "Count to five.",
        "options": {"temperature": 0, "num_predict": 6},
    })
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) >= 2
    assert all(line["done"] is False and "response" in line for line in lines[:-1])
    assert lines[-1]["done"] is True
    assert lines[-1]["response"] == ""
    assert lines[-1]["eval_count"] == 6


def test_generate_raw_prompt(client: ollama.Client) -> None:
    templated = client.generate(model=DEFAULT_MODEL, prompt="The capital of France is",
                                options={"temperature": 0, "num_predict": 6})
    raw = client.generate(model=DEFAULT_MODEL, prompt="The capital of France is", raw=True,
                          options={"temperature": 0, "num_predict": 6})
    assert raw.prompt_eval_count is not None and templated.prompt_eval_count is not None
    assert raw.prompt_eval_count < templated.prompt_eval_count
    assert raw.response


def test_options_stop_and_seed(client: ollama.Client) -> None:
    options: dict[str, Any] = {"temperature": 0.9, "seed": 77, "num_predict": 24}
    first = client.generate(model=DEFAULT_MODEL, prompt="Invent a name for a cat.",
                            options=options)
    second = client.generate(model=DEFAULT_MODEL, prompt="Invent a name for a cat.",
                             options=options)
    assert first.response == second.response

    words = first.response.split()
    assert len(words) > 3, first.response
    stop = words[2]
    stopped = client.generate(model=DEFAULT_MODEL, prompt="Invent a name for a cat.",
                              options={**options, "stop": [stop]})
    assert stop not in stopped.response
    assert stopped.done_reason == "stop"


def test_num_ctx_limits_and_caps(client: ollama.Client, server: ServerProcess) -> None:
    larger = client.chat(model=DEFAULT_MODEL, messages=ask("Hi"),
                         options={"num_ctx": 131072, "num_predict": 4})
    assert larger.eval_count == 4

    long_prompt = "word " * 200
    response = server.post("/api/chat", json={
        "model": DEFAULT_MODEL, "messages": ask(long_prompt), "stream": False,
        "options": {"num_ctx": 64},
    })
    assert_ollama_error(response, 400, "64")

    near_limit = server.post("/api/generate", json={
        "model": DEFAULT_MODEL, "prompt": "Write a story.", "raw": True, "stream": False,
        "options": {"num_ctx": 12, "temperature": 0},
    }).json()
    assert near_limit["done_reason"] == "length"
    assert near_limit["prompt_eval_count"] + near_limit["eval_count"] == 12


def test_format_json_parses(client: ollama.Client) -> None:
    response = client.chat(model=DEFAULT_MODEL, messages=ask("Describe a cat in JSON."),
                           format="json", options={"temperature": 0.5, "seed": 5,
                                                   "num_predict": 120})
    assert response.done_reason == "stop"
    assert isinstance(json.loads(response.message.content or ""), dict)


def test_think_needs_thinking_model(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=DEFAULT_MODEL, messages=ask("Hi"), think=True)
    assert caught.value.status_code == 400
    assert "does not support thinking" in caught.value.error
    plain = client.chat(model=DEFAULT_MODEL, messages=ask("Hi"), think=False,
                        options={"num_predict": 4})
    assert plain.message.thinking is None


def test_tool_call_in_ollama_shape(server: ServerProcess, client: ollama.Client) -> None:
    # The embedded model does not call tools on its own, so the call is forced with
    # Enclave's tool_choice extension; the official client's types parse the answer.
    raw = server.post("/api/chat", json={
        "model": DEFAULT_MODEL, "messages": ask("Call get_weather for Paris."),
        "tools": [WEATHER_TOOL], "tool_choice": "required", "stream": False,
        "options": {"temperature": 0, "num_predict": 80}})
    assert raw.status_code == 200, raw.text
    response = ollama.ChatResponse.model_validate(raw.json())
    calls = response.message.tool_calls
    assert calls, response.message
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "Paris"}

    history = [
        *ask("Call get_weather for Paris."),
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"},
    ]
    answer = client.chat(model=DEFAULT_MODEL, messages=history, tools=[WEATHER_TOOL],
                         options={"temperature": 0, "num_predict": 30})
    assert answer.done is True


def test_empty_chat_loads_model(server: ServerProcess) -> None:
    body = server.post("/api/chat", json={"model": DEFAULT_MODEL}).json()
    assert body["done"] is True
    assert body["done_reason"] == "load"
    assert server.post("/api/generate", json={"model": DEFAULT_MODEL}).json()["done_reason"] == (
        "load")


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/api/chat", {"model": "missing", "messages": ask("x")}, 404, ["missing"]),
    ("/api/chat", {"model": DEFAULT_MODEL, "messages": [{"role": "wizard", "content": "x"}]},
     400, ["role"]),
    ("/api/chat", {"model": DEFAULT_MODEL, "messages": ask("x"),
                   "options": {"temperature": "hot"}}, 400, ["temperature", "hot"]),
    ("/api/chat", {"model": DEFAULT_MODEL, "messages": [
        {"role": "user", "content": "x", "images": ["aGk="]}]}, 400, ["Images"]),
    ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "x", "suffix": "y"}, 400, ["suffix"]),
    ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "x",
                       "options": {"num_predict": 0}}, 400, ["num_predict"]),
    ("/api/show", {}, 400, ["model"]),
    ("/api/show", {"model": "missing"}, 404, ["missing"]),
    ("/api/nothing", {}, 404, ["/api/nothing"]),
])
def test_errors_use_ollama_shape(server: ServerProcess, path: str, body: dict[str, Any],
                                 status: int, words: list[str]) -> None:
    assert_ollama_error(server.post(path, json=body), status, *words)


def test_invalid_json_uses_ollama_shape(server: ServerProcess) -> None:
    response = server.post("/api/chat", content=b"{nope",
                           headers={"content-type": "application/json"})
    assert_ollama_error(response, 400, "not valid JSON")


def test_pull_is_refused_with_reason(client: ollama.Client, server: ServerProcess) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("llama3")
    assert caught.value.status_code == 501
    assert "engine.models_dir" in caught.value.error
    deleted = httpx.request("DELETE", server.base_url + "/api/delete", json={"model": "x"})
    assert_ollama_error(deleted, 501, "never downloads or changes models")
