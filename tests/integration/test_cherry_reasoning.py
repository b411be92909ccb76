"""DeepSeek-R1 reasoning on a server that uses the R1 distill chat template.

The embedded model does not think like R1, so a request grammar forces output of the shape
``reasoning</think>answer``. The answer can only come out split if the server saw that the
template's prompt ends inside ``<think>``: the output itself never opens the tag.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

TEMPLATE = (Path(__file__).resolve().parents[1] / "fixtures" / "templates"
            / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja")
FORCED = 'root ::= "Two and two make four." "</think>" "\\n\\n" "The answer is 4."'
QUESTION: list[Any] = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def r1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"ENCLAVE_ENGINE__CHAT_TEMPLATE": str(TEMPLATE),
           "ENCLAVE_ENGINE__REQUEST_GRAMMAR": "true",
           "ENCLAVE_EMBEDDINGS__ENABLED": "false"}
    with running_server(tmp_path_factory.mktemp("r1"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def client(r1_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=r1_server.base_url + "/v1", api_key="unused", max_retries=0)


def test_forced_output_is_split(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION,
                                              max_tokens=60, extra_body={"grammar": FORCED})
    message = response.choices[0].message.model_dump()
    assert message["reasoning_content"] == "Two and two make four."
    assert message["content"] == "The answer is 4."
    assert response.choices[0].finish_reason == "stop"


def test_stream_sends_reasoning_then_content(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION,
                                            max_tokens=60, stream=True,
                                            extra_body={"grammar": FORCED})
    kinds, reasoning, content = [], [], []
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta.model_dump()
        if delta.get("reasoning_content"):
            kinds.append("reasoning")
            reasoning.append(delta["reasoning_content"])
        if delta.get("content"):
            kinds.append("content")
            content.append(delta["content"])
    assert "".join(reasoning) == "Two and two make four."
    assert "".join(content) == "The answer is 4."
    first_content = kinds.index("content")
    assert set(kinds[:first_content]) == {"reasoning"}
    assert set(kinds[first_content:]) == {"content"}
    assert "think>" not in "".join(reasoning + content)


def test_reasoning_format_none_returns_raw(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, max_tokens=60,
        extra_body={"grammar": FORCED, "reasoning_format": "none"},
    )
    message = response.choices[0].message.model_dump()
    assert message["content"] == "Two and two make four.</think>\n\nThe answer is 4."
    assert "reasoning_content" not in message or message["reasoning_content"] is None


def test_unfinished_thinking_stays_reasoning(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION,
                                              temperature=0, max_tokens=8)
    message = response.choices[0].message.model_dump()
    assert response.choices[0].finish_reason == "length"
    assert message["reasoning_content"]
    assert message["content"] == ""


def test_ollama_thinking_field(r1_server: ServerProcess) -> None:
    with ollama.Client(host=r1_server.base_url, timeout=120) as ollama_client:
        assert "thinking" in (ollama_client.show(DEFAULT_MODEL).capabilities or [])
        thinking = ollama_client.chat(model=DEFAULT_MODEL, messages=QUESTION,
                                      options={"temperature": 0, "num_predict": 8})
        assert thinking.message.thinking
        assert thinking.message.content == ""
        raw = ollama_client.chat(model=DEFAULT_MODEL, messages=QUESTION, think=False,
                                 options={"temperature": 0, "num_predict": 8})
        assert raw.message.thinking is None
        assert raw.message.content
        assert raw.message.content.strip() == thinking.message.thinking.strip()
