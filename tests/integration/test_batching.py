"""Continuous batching seen from outside: concurrency, cancellation, backpressure, deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

WORDS = ["zebra", "violin", "tomato", "glacier", "pyramid", "octopus", "saxophone", "cactus"]
# SmolLM2's end-of-generation tokens, banned so a generation runs until it is stopped.
NO_EOS = {"0": -100, "2": -100, "4": -100}


def long_body(stream: bool = True, max_tokens: int = 3000) -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "stream": stream, "max_tokens": max_tokens,
            "logit_bias": NO_EOS,
            "messages": [{"role": "user", "content": "Write an endless story."}]}


def slots_active(server: ServerProcess) -> int:
    return int(server.get("/ready").json()["models"][DEFAULT_MODEL]["slots_active"])


def wait_until(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


async def stream_answer(client: openai.AsyncOpenAI, word: str) -> str:
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL, temperature=0, max_tokens=40, stream=True,
        messages=[{"role": "user", "content": f"Write one sentence about a {word}."}],
    )
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                    if chunk.choices])


def test_concurrent_streams_get_their_own_answers(server: ServerProcess) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x",
                                      max_retries=0) as client:
            return await asyncio.gather(*[stream_answer(client, word) for word in WORDS])

    answers = asyncio.run(run())
    for word, answer in zip(WORDS, answers, strict=True):
        mentioned = [other for other in WORDS if other in answer.lower()]
        assert mentioned == [word], f"{word!r} got {answer!r}"


def test_disconnect_frees_slot(server: ServerProcess) -> None:
    assert wait_until(lambda: slots_active(server) == 0)
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=long_body(),
                      timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
        assert slots_active(server) == 1
    # The client closed the connection: the slot is free within a few decode steps.
    assert wait_until(lambda: slots_active(server) == 0, timeout_s=5)
    assert "reason=cancelled" in server.log()


def test_non_streaming_disconnect_cancels(server: ServerProcess) -> None:
    assert wait_until(lambda: slots_active(server) == 0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json=long_body(stream=False),
                   timeout=1.0)
    assert wait_until(lambda: slots_active(server) == 0, timeout_s=5)
    # Logged as 499 (client closed request), not as a server error.
    assert wait_until(lambda: "POST /v1/chat/completions 499" in server.log(), timeout_s=5)


def test_deadline_header_ends_generation(server: ServerProcess) -> None:
    response = server.post("/v1/chat/completions", json=long_body(stream=False),
                           headers={"X-Request-Timeout": "1"})
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert "1 s" in error["message"]


def test_deadline_in_stream_sends_error_event(server: ServerProcess) -> None:
    events = []
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=long_body(),
                      headers={"X-Request-Timeout": "0.5"}, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "deadline_exceeded"


def test_full_queue_answers_429_and_keeps_serving(tmp_path: Path) -> None:
    env = {"ENCLAVE_ENGINE__QUEUE_SIZE": "1"}
    with running_server(tmp_path, "--parallel", "1", env=env) as server:
        url = server.base_url + "/v1/chat/completions"
        with (
            httpx.Client(timeout=30) as running,
            httpx.Client(timeout=30) as waiting,
            running.stream("POST", url, json=long_body()) as first,
        ):
            next(first.iter_lines())
            with waiting.stream("POST", url, json=long_body()) as second:
                assert wait_until(lambda: server.get("/ready").json()["models"][
                    DEFAULT_MODEL]["queue_depth"] == 1)
                refused = httpx.post(url, json=long_body(stream=False), timeout=30)
                assert refused.status_code == 429
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"]["code"] == "queue_full"
                assert second.status_code == 200
        assert "queue_full" in server.log()
        # Both streams were closed by their clients; the server serves the next request.
        assert wait_until(lambda: slots_active(server) == 0)
        answer = server.post("/v1/chat/completions", json={
            "model": DEFAULT_MODEL, "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hello"}]})
        assert answer.status_code == 200


def test_deadline_setting_applies_without_header(tmp_path: Path) -> None:
    env = {"ENCLAVE_ENGINE__REQUEST_TIMEOUT_S": "0.5"}
    with running_server(tmp_path, env=env) as server:
        response = server.post("/v1/chat/completions", json=long_body(stream=False))
        assert response.status_code == 504
        assert "0.5 s" in response.json()["error"]["message"]


def test_temperature_zero_repeats_exactly(server: ServerProcess) -> None:
    """The documented guarantee: the same request, alone on the server, repeats exactly."""
    server.wait_idle()
    body = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 40,
            "messages": [{"role": "user", "content": "Describe a lighthouse at night."}]}
    other = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 10,
             "messages": [{"role": "user", "content": "Describe a lighthouse by day."}]}
    answers = []
    for _ in range(3):
        answers.append(server.post("/v1/chat/completions", json=body).json())
        server.post("/v1/chat/completions", json=other)  # changes what the cache holds
    texts = {answer["choices"][0]["message"]["content"] for answer in answers}
    assert len(texts) == 1
    assert answers[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_repeated_system_prompt_reports_cached_tokens(server: ServerProcess) -> None:
    system = "You answer questions about the staff handbook, briefly and politely. " * 20
    usages = []
    for question in ("What is the leave policy?", "When is payday?"):
        response = server.post("/v1/chat/completions", json={
            "model": DEFAULT_MODEL, "max_tokens": 3,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": question}]})
        usages.append(response.json()["usage"])
    assert usages[0]["prompt_tokens_details"]["cached_tokens"] < usages[0]["prompt_tokens"] // 2
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] > usages[1]["prompt_tokens"] // 2
    timings = server.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "max_tokens": 3,
        "messages": [{"role": "user", "content": "hi"}]}).json()["timings"]
    assert set(timings) >= {"queue_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s"}
