"""Every bad input gets the right status and an OpenAI-shaped error that names the problem."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hi"}]


def post_chat(server: ServerProcess, body: Any, **kwargs: Any) -> Any:
    return server.post("/v1/chat/completions", json=body, **kwargs)


def assert_error(response: Any, status: int, param: str | None, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]
    # No framework internals in the message.
    for leak in ("pydantic", "Traceback", "loc", "errors.pydantic.dev"):
        assert leak not in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": DEFAULT_MODEL, "messages": USER, "n": 2}, "n", ["n = 2"]),
        ({"model": DEFAULT_MODEL, "messages": USER, "temperature": 3}, "temperature", ["2"]),
        ({"model": DEFAULT_MODEL, "messages": USER, "top_p": 0}, "top_p", ["top_p"]),
        ({"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 0}, "max_tokens", ["1"]),
        ({"model": DEFAULT_MODEL, "messages": USER, "logprobs": True}, "logprobs", ["logprobs"]),
        ({"model": DEFAULT_MODEL, "messages": []}, "messages", ["messages"]),
        ({"model": DEFAULT_MODEL}, "messages", ["Missing", "messages"]),
        ({"messages": USER}, "model", ["model"]),
        ({"model": DEFAULT_MODEL, "messages": [{"role": "wizard", "content": "x"}]},
         "messages[0].role", ["role"]),
        ({"model": DEFAULT_MODEL, "messages": USER, "stop": ["a"] * 20}, "stop", ["16"]),
        ({"model": DEFAULT_MODEL, "messages": USER, "logit_bias": {"abc": 1}},
         "logit_bias", ["abc"]),
        ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}]},
         "messages[0].content", ["image_url"]),
    ],
)
def test_chat_rejects_invalid_field(server: ServerProcess, body: dict[str, Any], param: str,
                                    words: list[str]) -> None:
    assert_error(post_chat(server, body), 400, param, *words)


def test_chat_rejects_invalid_json(server: ServerProcess) -> None:
    response = post_chat(server, None, content=b"{not json",
                         headers={"content-type": "application/json"})
    assert_error(response, 400, None, "not valid JSON")


def test_chat_rejects_non_object_body(server: ServerProcess) -> None:
    assert_error(post_chat(server, [1, 2]), 400, None, "JSON object")


def test_chat_unknown_model_is_404(server: ServerProcess) -> None:
    response = post_chat(server, {"model": "gpt-4o", "messages": USER})
    assert_error(response, 404, "model", "gpt-4o", DEFAULT_MODEL)
    assert response.json()["error"]["code"] == "model_not_found"


def test_prompt_longer_than_context_names_both_numbers(server: ServerProcess) -> None:
    long_text = "word " * 6000
    response = post_chat(server, {"model": DEFAULT_MODEL,
                                  "messages": [{"role": "user", "content": long_text}]})
    assert_error(response, 400, "messages", "4096")
    assert response.json()["error"]["code"] == "context_length_exceeded"
    message = response.json()["error"]["message"]
    prompt_count = int(message.split("needs ")[1].split(" ")[0])
    assert prompt_count > 4096


def test_max_tokens_beyond_context_is_rejected(server: ServerProcess) -> None:
    response = post_chat(server, {"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 5000})
    assert_error(response, 400, "messages", "4096", "5000")


def test_unknown_route_and_method_use_error_shape(server: ServerProcess) -> None:
    missing = server.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong_method = server.get("/v1/chat/completions")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_bad_timeout_header_is_rejected(server: ServerProcess) -> None:
    response = post_chat(server, {"model": DEFAULT_MODEL, "messages": USER},
                         headers={"X-Request-Timeout": "soon"})
    assert_error(response, 400, "X-Request-Timeout", "soon")


def test_completions_reject_unsupported_fields(server: ServerProcess) -> None:
    for body, param in (
        ({"model": DEFAULT_MODEL, "prompt": ["a", "b"]}, "prompt"),
        ({"model": DEFAULT_MODEL, "prompt": "a", "echo": True}, "echo"),
        ({"model": DEFAULT_MODEL, "prompt": "a", "suffix": "z"}, "suffix"),
    ):
        assert_error(server.post("/v1/completions", json=body), 400, param, param)


def test_sdk_raises_typed_errors(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=DEFAULT_MODEL, messages=USER, n=3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=USER)


def test_health_and_ready(server: ServerProcess) -> None:
    assert server.get("/health").json() == {"status": "ok"}
    ready = server.get("/ready").json()
    assert ready["status"] == "ready"
    assert ready["models"][DEFAULT_MODEL]["slots_total"] == 8
    assert server.get("/health").headers["x-request-id"].startswith("req-")
