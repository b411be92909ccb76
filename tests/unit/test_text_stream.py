"""TextAssembler: whole UTF-8 characters only, and no stop string, not even part of one."""

from __future__ import annotations

import pytest

from enclave.engine.text import StopMatcher, TextAssembler

SAMPLES = ["北京欢迎你 🎉 ok", "naïve café — done", "emoji 👩‍👩‍👧 family"]


def feed_bytes(assembler: TextAssembler, data: bytes, cut: list[int]) -> tuple[str, bool]:
    out, stopped, start = [], False, 0
    for end in [*cut, len(data)]:
        chunk = assembler.push(data[start:end])
        out.append(chunk.text)
        start = end
        if chunk.stopped:
            stopped = True
            break
    if not stopped:
        out.append(assembler.finish())
    return "".join(out), stopped


@pytest.mark.parametrize("text", SAMPLES)
def test_assembler_never_splits_characters(text: str) -> None:
    data = text.encode("utf-8")
    for size in range(1, 5):
        assembler = TextAssembler()
        for start in range(0, len(data), size):
            chunk = assembler.push(data[start:start + size])
            assert "\ufffd" not in chunk.text
        assert assembler.finish() == ""


@pytest.mark.parametrize("text", SAMPLES)
def test_assembler_reassembles_any_split(text: str) -> None:
    data = text.encode("utf-8")
    for cut in range(len(data) + 1):
        assert feed_bytes(TextAssembler(), data, [cut])[0] == text


def test_assembler_drops_incomplete_character_at_end() -> None:
    data = "好".encode()
    assembler = TextAssembler()
    assert assembler.push(data[:2]).text == ""
    assert assembler.finish() == ""


def test_stop_matcher_cuts_at_every_split_position() -> None:
    text = "The answer is 42. END OF ANSWER and more"
    stop = "END OF ANSWER"
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1, 3):
            matcher = StopMatcher([stop])
            released, stopped = [], False
            for piece in (text[:first], text[first:second], text[second:]):
                chunk = matcher.push(piece)
                released.append(chunk.text)
                # Nothing released so far may contain a prefix of the stop string past the cut.
                assert stop not in "".join(released)
                if chunk.stopped:
                    stopped = True
                    break
            assert stopped
            assert "".join(released) == "The answer is 42. "


def test_stop_matcher_releases_false_start() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("ST").text == ""
    assert matcher.push("ART").text == "START"
    assert matcher.flush() == ""


def test_stop_matcher_holds_partial_until_end() -> None:
    matcher = StopMatcher(["</answer>"])
    assert matcher.push("done </ans").text == "done "
    assert matcher.flush() == "</ans"


def test_stop_matcher_picks_earliest_of_several() -> None:
    matcher = StopMatcher(["world", "lo w"])
    chunk = matcher.push("hello world")
    assert chunk.stopped
    assert chunk.text == "hel"
