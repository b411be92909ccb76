"""ReasoningSplitter on scripted token streams that cut the tags at every position."""

from __future__ import annotations

import itertools

import pytest

from enclave.output.reasoning import ReasoningSplitter, prompt_opens_reasoning, template_thinks

# (output text, prompt opened <think>, expected reasoning, expected answer)
CASES = [
    ("<think>\nAdd two and two.\n</think>\n\nThe answer is 4.", False,
     "Add two and two.\n", "The answer is 4."),
    ("Add two and two.</think>The answer is 4.", True, "Add two and two.", "The answer is 4."),
    ("\n  <think>plan</think>  done", False, "plan", "done"),
    ("No reasoning here, not even <think> in the middle.", False, "",
     "No reasoning here, not even <think> in the middle."),
    ("<thin air> is not a tag", False, "", "<thin air> is not a tag"),
    ("<think>stopped while thinking", False, "stopped while thinking", ""),
    ("\nstill thinking when the limit came", True, "still thinking when the limit came", ""),
    ("a </thinker> b</think>c", True, "a </thinker> b", "c"),
    ("北京 <think>思考</think>答案", False, "", "北京 <think>思考</think>答案"),
    ("<think>思考过程</think>\n答案", False, "思考过程", "答案"),
    ("</think>only the answer", True, "", "only the answer"),
    ("", True, "", ""),
    ("   ", False, "", "   "),
]


def run(pieces: list[str], opened: bool) -> tuple[str, str]:
    splitter = ReasoningSplitter(opened=opened)
    reasoning, content = [], []
    for piece in pieces:
        split = splitter.push(piece)
        reasoning.append(split.reasoning)
        content.append(split.content)
    tail = splitter.finish()
    reasoning.append(tail.reasoning)
    content.append(tail.content)
    return "".join(reasoning), "".join(content)


@pytest.mark.parametrize(("text", "opened", "reasoning", "content"), CASES)
def test_splitter_whole_text(text: str, opened: bool, reasoning: str, content: str) -> None:
    assert run([text], opened) == (reasoning, content)


@pytest.mark.parametrize(("text", "opened", "reasoning", "content"), CASES)
def test_splitter_every_single_cut(text: str, opened: bool, reasoning: str,
                                   content: str) -> None:
    for cut in range(len(text) + 1):
        pieces = [text[:cut], text[cut:]]
        assert run(pieces, opened) == (reasoning, content), pieces


@pytest.mark.parametrize(("text", "opened", "reasoning", "content"), CASES)
def test_splitter_every_double_cut(text: str, opened: bool, reasoning: str,
                                   content: str) -> None:
    for first, second in itertools.combinations(range(len(text) + 1), 2):
        pieces = [text[:first], text[first:second], text[second:]]
        assert run(pieces, opened) == (reasoning, content), pieces


@pytest.mark.parametrize(("text", "opened", "reasoning", "content"), CASES)
def test_splitter_one_character_pieces(text: str, opened: bool, reasoning: str,
                                       content: str) -> None:
    assert run(list(text), opened) == (reasoning, content)


def test_splitter_never_releases_tag_text() -> None:
    text = "<think>\nplan\n</think>\n\nanswer"
    splitter = ReasoningSplitter(opened=False)
    released = []
    for char in text:
        split = splitter.push(char)
        released.append(split.reasoning + split.content)
    assert "<" not in "".join(released)
    assert "think" not in "".join(released)


def test_splitter_streams_reasoning_before_close() -> None:
    splitter = ReasoningSplitter(opened=True)
    first = splitter.push("step one, ")
    assert first.reasoning == "step one, "
    held = splitter.push("step two </thi")
    assert held.reasoning == "step two "
    closed = splitter.push("nk>answer")
    assert closed.reasoning == ""
    assert closed.content == "answer"


def test_prompt_opens_reasoning() -> None:
    assert prompt_opens_reasoning("<｜Assistant｜><think>\n")
    assert prompt_opens_reasoning("<think>")
    assert not prompt_opens_reasoning("<｜Assistant｜><think>\n</think>")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")
    assert not prompt_opens_reasoning("<think>already said something")


def test_template_thinks() -> None:
    assert template_thinks("{{ '<｜Assistant｜><think>\\n' }}")
    assert template_thinks("{% set content = content.split('</think>')[-1] %}")
    assert not template_thinks("{{ '<|im_start|>assistant\\n' }}")
