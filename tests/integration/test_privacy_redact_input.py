"""redact-input mode, checked where the prompt enters the engine and where the answer leaves.

The app runs in this process, so a spy on ``LlamaEngine.submit`` can detokenize the exact
prompt tokens the engine is given. The embedded model would not repeat a placeholder on its
own, so a request grammar (or a JSON schema whose only allowed value is the placeholder)
forces it to write one. The caller must then read the original value. One app uses the R1
distill chat template, which makes the server split ``reasoning</think>answer``, so reasoning
is restored too; the other keeps the model's own template, under which tool calls and JSON
schemas constrain the whole answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from enclave.api.app import create_app
from enclave.config import Settings
from enclave.engine.llama_engine import LlamaEngine
from enclave.engine.types import GenerationRequest
from enclave.policy import PrivacyMode
from tests.server import DEFAULT_MODEL

pytestmark = pytest.mark.slow

TEMPLATE = (Path(__file__).resolve().parents[1] / "fixtures" / "templates"
            / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja")
ID_NUMBER = "11010519491231002X"
PHONE = "13812345678"
EMAIL = "li.wei@example.com"
CARD = "4111 1111 1111 1111"
RAW_VALUES = (ID_NUMBER, PHONE, EMAIL, CARD)
# Reasoning, then content; both name the phone and the e-mail by their placeholders.
FORCED = ('root ::= "Reach [PHONE_1] or [EMAIL_1]." "</think>" '
          '"Call [PHONE_1], card [BANK_CARD_1]."')
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": f"The customer's ID number is {ID_NUMBER}."},
    {"role": "user", "content": [
        {"type": "text", "text": f"My phone is {PHONE} and my card is {CARD}. "},
        {"type": "text", "text": "Look up my e-mail."},
    ]},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": json.dumps({"phone": int(PHONE)})},
    }]},
    {"role": "tool", "tool_call_id": "call_1", "content": f"e-mail: {EMAIL}"},
    {"role": "user", "content": "How can the bank reach me?"},
]
SMS_TOOL = [{"type": "function", "function": {
    "name": "send_sms",
    "parameters": {"type": "object", "properties": {"to": {"enum": ["[PHONE_1]"]}},
                   "required": ["to"]},
}}]


def redact_input_app(data_dir: Path, template: str | None) -> TestClient:
    settings = Settings(data_dir=data_dir)
    settings.privacy.mode = PrivacyMode.REDACT_INPUT
    settings.engine.chat_template = template
    settings.engine.request_grammar = True
    settings.engine.context_size = 1024
    settings.engine.parallel = 2
    settings.embeddings.enabled = False
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app whose chat template lets the server split reasoning from the content."""
    with redact_input_app(tmp_path_factory.mktemp("r1"), str(TEMPLATE)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def plain_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with the model's own chat template."""
    with redact_input_app(tmp_path_factory.mktemp("plain"), None) as test_client:
        yield test_client


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every prompt submitted to an engine during the test."""
    seen: list[str] = []
    submit = LlamaEngine.submit

    def spy(engine: LlamaEngine, request: GenerationRequest) -> Any:
        seen.append(engine.model.detokenize(request.prompt_tokens))
        return submit(engine, request)

    monkeypatch.setattr(LlamaEngine, "submit", spy)
    return seen


def chat(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": MESSAGES, "max_tokens": 100, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sse_deltas(client: TestClient, **fields: Any) -> list[dict[str, Any]]:
    deltas = []
    with client.stream("POST", "/v1/chat/completions", json={
            "model": DEFAULT_MODEL, "messages": MESSAGES, "max_tokens": 100, "stream": True,
            **fields}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                deltas.extend(choice["delta"] for choice in chunk["choices"])
    return deltas


def test_engine_reads_placeholders(client: TestClient, prompts: list[str]) -> None:
    chat(client, grammar=FORCED)

    assert len(prompts) == 1
    prompt = prompts[0]
    for value in RAW_VALUES:
        assert value not in prompt
    assert "The customer's ID number is [ID_CARD_1]." in prompt
    assert "My phone is [PHONE_1] and my card is [BANK_CARD_1]." in prompt
    assert "e-mail: [EMAIL_1]" in prompt
    # The integer phone number in the earlier call's arguments became a JSON string.
    assert '{"phone": "[PHONE_1]"}' in prompt


def test_whole_answer_restored(client: TestClient) -> None:
    message = chat(client, grammar=FORCED)["choices"][0]["message"]

    assert message["reasoning_content"] == f"Reach {PHONE} or {EMAIL}."
    assert message["content"] == f"Call {PHONE}, card {CARD}."


def test_streamed_answer_restored(client: TestClient) -> None:
    deltas = sse_deltas(client, grammar=FORCED)

    reasoning = [delta["reasoning_content"] for delta in deltas if delta.get("reasoning_content")]
    content = [delta["content"] for delta in deltas if delta.get("content")]
    assert "".join(reasoning) == f"Reach {PHONE} or {EMAIL}."
    assert "".join(content) == f"Call {PHONE}, card {CARD}."
    # Placeholders span several tokens; no piece of one may reach the caller.
    for piece in reasoning + content:
        assert "[" not in piece


def test_tool_call_arguments_restored(plain_client: TestClient) -> None:
    fields: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Text {PHONE} that the card is ready."}],
        "tools": SMS_TOOL,
        "tool_choice": {"type": "function", "function": {"name": "send_sms"}},
    }
    whole = chat(plain_client, **fields)
    deltas = sse_deltas(plain_client, **fields)

    call = whole["choices"][0]["message"]["tool_calls"][0]["function"]
    assert json.loads(call["arguments"]) == {"to": PHONE}
    streamed = "".join(part["function"]["arguments"] for delta in deltas
                       for part in delta.get("tool_calls", []))
    assert json.loads(streamed) == {"to": PHONE}


def test_ollama_stream_restored(plain_client: TestClient, prompts: list[str]) -> None:
    schema = {"type": "object", "properties": {"phone": {"enum": ["[PHONE_1]"]}},
              "required": ["phone"]}
    with plain_client.stream("POST", "/api/chat", json={
            "model": DEFAULT_MODEL, "format": schema,
            "messages": [{"role": "user", "content": f"Format {PHONE} as JSON."}],
            "options": {"num_predict": 30}}) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]

    content = "".join(line["message"]["content"] for line in lines)
    assert json.loads(content) == {"phone": PHONE}
    assert PHONE not in prompts[0]
    assert "Format [PHONE_1] as JSON." in prompts[0]


def test_completion_prompt_redacted(client: TestClient, prompts: list[str]) -> None:
    response = client.post("/v1/completions", json={
        "model": DEFAULT_MODEL, "prompt": f"Mail {EMAIL} about card {CARD}:", "max_tokens": 4})
    generate = client.post("/api/generate", json={
        "model": DEFAULT_MODEL, "prompt": f"Phone {PHONE}:", "raw": True, "stream": False,
        "options": {"num_predict": 4}})

    assert response.status_code == 200
    assert generate.status_code == 200
    assert prompts[0].endswith("Mail [EMAIL_1] about card [BANK_CARD_1]:")
    assert prompts[1].endswith("Phone [PHONE_1]:")


def test_restore_off_returns_placeholders(client: TestClient,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    state = client.app.state.enclave  # type: ignore[attr-defined]
    monkeypatch.setattr(state.privacy.guard.settings, "restore_output", False)

    short = [{"role": "user", "content": f"Phone {PHONE}, card {CARD}."}]
    message = chat(client, messages=short, grammar=FORCED)["choices"][0]["message"]
    deltas = sse_deltas(client, messages=short, grammar=FORCED)

    assert message["content"] == "Call [PHONE_1], card [BANK_CARD_1]."
    assert "".join(delta.get("content") or "" for delta in deltas) == (
        "Call [PHONE_1], card [BANK_CARD_1].")
