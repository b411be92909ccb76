"""Cherry Studio's requests replayed as raw JSON, in the shapes docs/clients.md lists."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

# Custom OpenAI-type providers in Cherry Studio always send a key, even to a keyless server.
HEADERS = {"Authorization": "Bearer sk-cherry-studio", "Content-Type": "application/json"}
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
CHECK_TIMEOUT_S = 15.0  # Cherry Studio gives up on a model check after 15 s


def sse_events(lines: list[str]) -> list[Any]:
    events: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream_chat(server: ServerProcess, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body,
                      headers=HEADERS, timeout=120) as response:
        assert response.status_code == 200, response.read()
        return sse_events(list(response.iter_lines()))


def test_check_gets_first_chunk_quickly(server: ServerProcess) -> None:
    body = {"model": DEFAULT_MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "test"},
                         {"role": "user", "content": "hi"}]}
    started = time.monotonic()
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body,
                      headers=HEADERS, timeout=CHECK_TIMEOUT_S) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        elapsed = time.monotonic() - started
    assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"
    assert elapsed < CHECK_TIMEOUT_S

    # Cherry Studio aborts the check after the first chunk: the slot must be freed.
    deadline = time.monotonic() + 10
    while server.get("/ready").json()["models"][DEFAULT_MODEL]["slots_active"] and (
            time.monotonic() < deadline):
        time.sleep(0.1)
    assert server.get("/ready").json()["models"][DEFAULT_MODEL]["slots_active"] == 0


def test_stream_ends_with_usage_chunk(server: ServerProcess) -> None:
    events = stream_chat(server, {
        "model": DEFAULT_MODEL, "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0, "max_tokens": 12,
        "messages": [{"role": "user", "content": "Say something nice."}],
    })
    assert events[-1] == "[DONE]"
    usage_chunk, finish_chunk = events[-2], events[-3]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 12
    assert finish_chunk["choices"][0]["finish_reason"] == "length"
    assert all(event["usage"] is None for event in events[:-2])


def test_reasoning_history_accepted(server: ServerProcess) -> None:
    response = server.post("/v1/chat/completions", headers=HEADERS, json={
        "model": DEFAULT_MODEL, "max_tokens": 8,
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Two plus two is four."},
            {"role": "user", "content": "And 3+3?"},
        ],
    })
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_tool_call_deltas_parse_like_cherry(server: ServerProcess) -> None:
    tools = [{"type": "function", "function": {
        "name": "mcp_search_web", "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}}]
    events = stream_chat(server, {
        "model": DEFAULT_MODEL, "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0, "max_tokens": 80, "tools": tools, "tool_choice": "required",
        "messages": [{"role": "user", "content": "Search the web for llama.cpp"}],
    })

    # Cherry Studio starts a call on a delta that names the function (taking its id) and
    # appends the arguments of later deltas to the call at the same index.
    calls: dict[int, dict[str, str]] = {}
    for event in events[:-1]:
        for choice in event["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                function = delta.get("function") or {}
                if function.get("name"):
                    calls[delta["index"]] = {"id": delta.get("id") or "",
                                             "name": function["name"],
                                             "arguments": function.get("arguments") or ""}
                elif function.get("arguments"):
                    calls[delta["index"]]["arguments"] += function["arguments"]
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "mcp_search_web"
    assert isinstance(json.loads(calls[0]["arguments"])["query"], str)
    finish = [c["finish_reason"] for e in events[:-1] for c in e["choices"] if c["finish_reason"]]
    assert finish == ["tool_calls"]


def test_embeddings_batch_base64(server: ServerProcess) -> None:
    texts = [f"Knowledge base chunk number {index}." for index in range(10)]
    response = server.post("/v1/embeddings", headers=HEADERS, json={
        "model": EMBEDDING_MODEL, "input": texts, "encoding_format": "base64",
        "dimensions": 384,
    })
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(10))
    for item in data:
        vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert vector.shape == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3

    check = server.post("/v1/embeddings", headers=HEADERS,
                        json={"model": EMBEDDING_MODEL, "input": "hi"})
    assert len(check.json()["data"][0]["embedding"]) == 384


def test_knowledge_base_rerank(server: ServerProcess) -> None:
    documents = ["Paris is the capital of France.", "Bananas are yellow.",
                 "France's capital city is Paris."]
    response = server.post("/v1/rerank", headers=HEADERS, json={
        "model": EMBEDDING_MODEL + "-cosine-rerank", "query": "What is the capital of France?",
        "documents": documents, "top_n": 2,
    })
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    assert {result["index"] for result in results} == {0, 2}
    assert all(0.0 <= result["relevance_score"] <= 1.0 for result in results)


def test_ollama_mode_show_then_num_ctx(server: ServerProcess) -> None:
    shown = server.post("/api/show", json={"model": DEFAULT_MODEL}).json()
    architecture = shown["model_info"]["general.architecture"]
    context = shown["model_info"][f"{architecture}.context_length"]
    assert context == 4096

    with httpx.stream("POST", server.base_url + "/api/chat", timeout=120, json={
        "model": DEFAULT_MODEL, "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"num_ctx": context, "num_predict": 6, "temperature": 0},
    }) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] is True
    assert lines[-1]["eval_count"] == 6


def test_ollama_embed_then_legacy_fallback(server: ServerProcess) -> None:
    batch = server.post("/api/embed", json={"model": EMBEDDING_MODEL,
                                            "input": ["first chunk", "second chunk"],
                                            "truncate": False})
    assert batch.status_code == 200
    assert len(batch.json()["embeddings"]) == 2
    single = server.post("/api/embed", json={"model": EMBEDDING_MODEL, "input": "one chunk",
                                             "truncate": False})
    assert len(single.json()["embeddings"]) == 1
    legacy = server.post("/api/embeddings", json={"model": EMBEDDING_MODEL,
                                                  "prompt": "one chunk"})
    assert np.allclose(legacy.json()["embedding"], single.json()["embeddings"][0], atol=1e-5)


def test_cors_default_admits_no_browser_origin(server: ServerProcess) -> None:
    preflight = httpx.options(server.base_url + "/v1/chat/completions", headers={
        "Origin": "null", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })
    assert "access-control-allow-origin" not in preflight.headers
    # Cherry Studio's windows run with webSecurity off, so Chromium sends no preflight and
    # does not check the response headers; the request itself is served.
    direct = server.post("/v1/chat/completions", headers={**HEADERS, "Origin": "file://"},
                         json={"model": DEFAULT_MODEL, "max_tokens": 2,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert direct.status_code == 200
    assert "access-control-allow-origin" not in direct.headers
