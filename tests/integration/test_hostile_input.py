"""Hostile requests get a 4xx that names the problem, and the server keeps serving after them.

Each case here once crashed the process (SIGSEGV, out of memory), stopped the engine for every
later request, or returned a 500.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hi"}]


def post_json_text(server: ServerProcess, path: str, text: str) -> Any:
    """Post a body as given, so that escapes such as a lone surrogate reach the server."""
    return server.post(path, content=text.encode(), headers={"content-type": "application/json"})


def assert_server_healthy(server: ServerProcess) -> None:
    assert server.get("/health").status_code == 200
    assert server.get("/ready").json()["status"] == "ready"
    response = server.post("/v1/chat/completions",
                           json={"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 2})
    assert response.status_code == 200, response.text


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_lone_surrogate_is_400(server: ServerProcess) -> None:
    body = json.dumps({"model": DEFAULT_MODEL, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "a\ud800b"}]})
    response = post_json_text(server, "/v1/chat/completions", body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert "\\ud800" in error["message"]
    assert_server_healthy(server)


def test_lone_surrogate_ollama_shape(server: ServerProcess) -> None:
    body = json.dumps({"model": DEFAULT_MODEL, "stream": False,
                       "messages": [{"role": "user", "content": "\udc00"}]})
    response = post_json_text(server, "/api/chat", body)

    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["error"]


def test_surrogate_pair_is_accepted(server: ServerProcess) -> None:
    # A pair is one character (here U+1F600) written as two escapes, and it is valid.
    body = json.dumps({"model": DEFAULT_MODEL, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "\U0001f600"}]})
    assert '\\ud83d\\ude00' in body

    response = post_json_text(server, "/v1/chat/completions", body)

    assert response.status_code == 200, response.text


def test_deeply_nested_json_is_400(server: ServerProcess) -> None:
    depth = 100_000
    body = (f'{{"model": "{DEFAULT_MODEL}", "messages": [], "metadata": '
            + "[" * depth + "]" * depth + "}")
    response = post_json_text(server, "/v1/chat/completions", body)

    assert response.status_code == 400, response.text
    assert "too deeply" in response.json()["error"]["message"]


def test_integer_of_5000_digits_is_400(server: ServerProcess) -> None:
    body = (f'{{"model": "{DEFAULT_MODEL}", "messages": [], "max_tokens": 1'
            + "0" * 5000 + "}")
    for path in ("/v1/chat/completions", "/api/show"):
        response = post_json_text(server, path, body)
        assert response.status_code == 400, (path, response.text)


def test_empty_completion_prompt_keeps_engine(server: ServerProcess) -> None:
    response = server.post("/v1/completions",
                           json={"model": DEFAULT_MODEL, "prompt": "", "max_tokens": 2})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "prompt"
    assert_server_healthy(server)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "maxLength": 100_000}, ["maxLength = 100000", "1000"]),
        ({"type": "string", "minLength": 1_000_000_000}, ["minLength = 1000000000"]),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 50_000}, ["maxItems"]),
        ({"type": "object", "properties": {"code": {"type": "string",
                                                    "pattern": "^a{0,100000}$"}}},
         ["pattern", "schema.properties.code"]),
    ],
)
def test_schema_huge_count_is_400(server: ServerProcess, schema: dict[str, Any],
                                  words: list[str]) -> None:
    started = time.monotonic()
    response = server.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": USER, "max_tokens": 2,
        "response_format": schema_format(schema),
    })

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "response_format.json_schema.schema"
    for word in words:
        assert word in error["message"], error["message"]
    assert time.monotonic() - started < 10
    assert_server_healthy(server)


def test_ollama_format_huge_count_is_400(server: ServerProcess) -> None:
    response = server.post("/api/chat", json={
        "model": DEFAULT_MODEL, "messages": USER, "stream": False,
        "format": {"type": "array", "maxItems": 100_000}, "options": {"num_predict": 2},
    })

    assert response.status_code == 400, response.text
    assert "maxItems" in response.json()["error"]


def test_tool_huge_count_is_relaxed(server: ServerProcess) -> None:
    parameters = {"type": "object",
                  "properties": {"text": {"type": "string", "maxLength": 100_000}}}
    response = server.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": USER, "max_tokens": 8, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "save", "parameters": parameters}}],
    })

    assert response.status_code == 200, response.text
    assert_server_healthy(server)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions",
         {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "a" * 5_000_000}]}),
        ("/v1/completions", {"model": DEFAULT_MODEL, "prompt": "a" * 5_000_000}),
    ],
)
def test_huge_prompt_rejected_before_tokenizing(server: ServerProcess, path: str,
                                                body: dict[str, Any]) -> None:
    response = server.post(path, json=body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    # The message counts characters, not tokens: the prompt was rejected before tokenizing.
    assert "characters" in error["message"]


def test_huge_prompt_ollama_generate(server: ServerProcess) -> None:
    response = server.post("/api/generate", json={
        "model": DEFAULT_MODEL, "prompt": "a" * 5_000_000, "stream": False})

    assert response.status_code == 400, response.text
    assert "context window" in response.json()["error"]


def test_union_field_error_names_field(server: ServerProcess) -> None:
    response = server.post("/api/chat", json={"model": DEFAULT_MODEL, "messages": USER,
                                              "stream": False, "think": "x"})

    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert "'think'" in message
    assert "think.bool" not in message
