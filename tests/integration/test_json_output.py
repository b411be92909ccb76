"""Structured output with the real model: sampled answers always parse and match the schema."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import ollama
import openai
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string", "maxLength": 30},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]},
                 "maxItems": 3},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "member"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe a person called Ana as JSON."}]
# Every string in PERSON has a maximum length, so 400 tokens always reach the end.


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_schema_holds_for_twenty_samples(client: openai.OpenAI) -> None:
    def sample(seed: int) -> Any:
        return client.chat.completions.create(
            model=DEFAULT_MODEL, messages=ASK, temperature=1.0, seed=seed, max_tokens=400,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON,
                                             "strict": True}},
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(sample, range(20)))
    answers = []
    for response in responses:
        choice = response.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        value = json.loads(choice.message.content or "")
        jsonschema.validate(value, PERSON)
        answers.append(choice.message.content)
    assert len(set(answers)) > 10  # sampled, not one greedy answer repeated


def test_json_object_streams_valid_json(client: openai.OpenAI) -> None:
    chunks = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=ASK, temperature=0.8, seed=3, max_tokens=200,
        response_format={"type": "json_object"}, stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert isinstance(json.loads(text), dict)


def test_ollama_format_schema(server: ServerProcess) -> None:
    with ollama.Client(host=server.base_url, timeout=120) as ollama_client:
        def sample(seed: int) -> Any:
            return ollama_client.chat(model=DEFAULT_MODEL, messages=ASK, format=PERSON,
                                      options={"temperature": 1.0, "seed": seed,
                                               "num_predict": 400})

        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(sample, range(3)))
    for response in responses:
        assert response.done_reason == "stop"
        jsonschema.validate(json.loads(response.message.content or ""), PERSON)


def test_unsupported_schema_rejected(server: ServerProcess) -> None:
    response = server.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": ASK,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "remote", "schema": {"$ref": "https://example.invalid/schema.json"}}},
    })
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format.json_schema.schema"

    missing = server.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": ASK, "response_format": {"type": "json_schema"},
    })
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "response_format.json_schema"


def test_request_grammar_off_by_default(server: ServerProcess) -> None:
    body: dict[str, Any] = {"model": DEFAULT_MODEL, "messages": ASK, "grammar": 'root ::= "x"'}
    response = server.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "grammar"
    assert "engine.request_grammar" in response.json()["error"]["message"]
