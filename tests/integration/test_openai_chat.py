"""The OpenAI-compatible API driven by the official openai SDK against the real server."""

from __future__ import annotations

import openai
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

CHINESE_PROMPT = "请用中文介绍一下北京的历史和文化，包括故宫和长城。"


@pytest.fixture(autouse=True)
def idle_server(server: ServerProcess) -> None:
    # Answers are compared across requests; that is guaranteed only with nothing else running.
    server.wait_idle()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def chat(client: openai.OpenAI, content: str, **kwargs: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": content}], **kwargs
    )


def stream_text(client: openai.OpenAI, content: str, **kwargs: object) -> tuple[str, list[object]]:
    chunks = list(client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": content}], stream=True,
        **kwargs,
    ))
    text = "".join(
        chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices
    )
    return text, chunks


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert DEFAULT_MODEL in ids
    assert client.models.retrieve(DEFAULT_MODEL).id == DEFAULT_MODEL


def test_models_retrieve_unknown_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert "no-such-model" in caught.value.message


def test_chat_returns_answer_with_usage(client: openai.OpenAI) -> None:
    response = chat(client, "What is the capital of France?", temperature=0, max_tokens=40)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 40
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_chat_accepts_text_parts_and_extra_fields(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
        max_tokens=5,
        user="alice",
        metadata={"team": "risk"},
        store=False,
        extra_body={"vendor_option": {"x": 1}, "repetition_penalty": 1.1},
    )
    assert response.choices[0].message.content is not None


def test_chinese_stream_matches_whole_answer(client: openai.OpenAI) -> None:
    whole = chat(client, CHINESE_PROMPT, temperature=0, max_tokens=80)
    text, chunks = stream_text(client, CHINESE_PROMPT, temperature=0, max_tokens=80)
    assert whole.choices[0].message.content == text
    assert any(ord(char) > 0x2E80 for char in text), text  # CJK came back, not just ASCII
    assert "\ufffd" not in text
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    for delta in filter(None, deltas):
        # Each delta is valid UTF-8 on its own: no character was split between chunks.
        assert delta.encode("utf-8").decode("utf-8") == delta
        assert "\ufffd" not in delta


def test_stream_usage_chunk_matches_tokens(client: openai.OpenAI) -> None:
    text, chunks = stream_text(
        client, "Count from one to fifty in words.", temperature=0, max_tokens=12,
        stream_options={"include_usage": True},
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 12
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [reason for reason in finish if reason] == ["length"]
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    # English text: one chunk per generated token.
    assert len(content_chunks) == last.usage.completion_tokens


def test_max_tokens_and_max_completion_tokens(client: openai.OpenAI) -> None:
    for limit in ({"max_tokens": 7}, {"max_completion_tokens": 7}):
        response = chat(client, "Write a long story about a dragon.", temperature=0, **limit)
        assert response.choices[0].finish_reason == "length"
        assert response.usage is not None
        assert response.usage.completion_tokens == 7


def test_stop_string_spanning_tokens_never_appears(client: openai.OpenAI) -> None:
    prompt = "Write two sentences about the sea."
    full = chat(client, prompt, temperature=0, max_tokens=60).choices[0].message.content or ""
    words = full.split()
    assert len(words) > 6, full
    # Several words from the middle: certainly more than one token.
    stop = " ".join(words[3:6])
    expected = full[: full.index(stop)]

    response = chat(client, prompt, temperature=0, max_tokens=60, stop=[stop])
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"

    text, _ = stream_text(client, prompt, temperature=0, max_tokens=60, stop=stop)
    assert text == expected
    assert stop not in text


def test_seed_repeats_sampled_answer(client: openai.OpenAI) -> None:
    first = chat(client, "Invent a name for a cat.", temperature=0.9, seed=1234, max_tokens=20)
    second = chat(client, "Invent a name for a cat.", temperature=0.9, seed=1234, max_tokens=20)
    assert first.choices[0].message.content == second.choices[0].message.content


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model=DEFAULT_MODEL, prompt="The three primary colours are", max_tokens=15, temperature=0
    )
    assert whole.choices[0].text
    streamed = client.completions.create(
        model=DEFAULT_MODEL, prompt="The three primary colours are", max_tokens=15, temperature=0,
        stream=True,
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == (
        whole.choices[0].text
    )


def test_penalties_are_applied(client: openai.OpenAI) -> None:
    # Greedy decoding repeats "1. 1\n2. 2..."; penalties on repeated tokens must change that.
    plain = chat(client, "Count from 1 to 20.", temperature=0, max_tokens=30)
    penalised = chat(client, "Count from 1 to 20.", temperature=0, max_tokens=30,
                     presence_penalty=1.5, frequency_penalty=1.5)
    assert penalised.choices[0].message.content
    assert penalised.choices[0].message.content != plain.choices[0].message.content
