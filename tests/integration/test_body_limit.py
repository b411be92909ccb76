"""server.max_body_mb: an oversized body gets 413 in the protocol's shape, declared or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

LIMIT_BYTES = 20_000


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path: Path = tmp_path_factory.mktemp("body-limit")
    env = {"ENCLAVE_SERVER__MAX_BODY_MB": str(LIMIT_BYTES / 1_000_000),
           "ENCLAVE_EMBEDDINGS__ENABLED": "false"}
    with running_server(tmp_path, "--context-size", "512", "--parallel", "1",
                        env=env) as server:
        yield server


def chat_body(characters: int) -> dict[str, object]:
    return {"model": DEFAULT_MODEL, "max_tokens": 2,
            "messages": [{"role": "user", "content": "a" * characters}]}


def test_declared_length_over_limit(small_limit: ServerProcess) -> None:
    response = small_limit.post("/v1/chat/completions", json=chat_body(LIMIT_BYTES))

    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "server.max_body_mb" in error["message"]
    assert response.headers["x-request-id"]


def test_chunked_body_over_limit(small_limit: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "' + DEFAULT_MODEL.encode() + b'", "prompt": "'
        for _ in range(10):
            yield b"a" * 5_000
        yield b'"}'

    # A generator body is sent with Transfer-Encoding: chunked and no Content-Length.
    response = httpx.post(small_limit.base_url + "/v1/completions", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=60)

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"


def test_ollama_shape_over_limit(small_limit: ServerProcess) -> None:
    response = small_limit.post("/api/show", json={"model": "x" * LIMIT_BYTES})

    assert response.status_code == 413, response.text
    assert set(response.json()) == {"error"}


def test_body_under_limit_is_served(small_limit: ServerProcess) -> None:
    response = small_limit.post("/v1/chat/completions", json=chat_body(100))

    assert response.status_code == 200, response.text


def test_long_model_name_is_cut_in_error(small_limit: ServerProcess) -> None:
    response = small_limit.post("/v1/chat/completions",
                                json={**chat_body(10), "model": "m" * 10_000})

    assert response.status_code == 404, response.text
    message = response.json()["error"]["message"]
    assert "m" * 200 + "..." in message
    assert len(message) < 1_000
