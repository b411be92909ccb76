"""Tool calls parsed from every supported output format, streamed in any cut."""

from __future__ import annotations

import json

import pytest

from enclave.output.tool_calls import ToolCall, ToolCallFormat, ToolCallStream, detect_format

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}}
DEEPSEEK = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
    '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜>\n'
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n"
    '```json\n{"zone": "CET"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
)

# (format, output, expected text, expected calls as (name, arguments))
CASES = [
    (ToolCallFormat.HERMES,
     f"<tool_call>\n{json.dumps(WEATHER)}\n</tool_call>",
     "", [("get_weather", {"city": "Paris"})]),
    (ToolCallFormat.HERMES,
     f"Let me check.\n<tool_call>{json.dumps(WEATHER)}</tool_call>\n"
     '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n',
     "Let me check.\n", [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    (ToolCallFormat.HERMES,  # small models often stop before the closing tag
     f"\n<tool_call>\n{json.dumps(WEATHER)}",
     "", [("get_weather", {"city": "Paris"})]),
    (ToolCallFormat.HERMES,
     "A <tool_cal that is not a call.", "A <tool_cal that is not a call.", []),
    (ToolCallFormat.HERMES,  # a block that does not parse comes back as text
     '<tool_call>{"name": oops}</tool_call>', '<tool_call>{"name": oops}</tool_call>', []),
    (ToolCallFormat.LLAMA3_JSON,
     '{"name": "get_weather", "parameters": {"city": "Paris"}}',
     "", [("get_weather", {"city": "Paris"})]),
    (ToolCallFormat.LLAMA3_JSON,
     '{"answer": 42}', '{"answer": 42}', []),
    (ToolCallFormat.LLAMA3_JSON, "Plain answer {not json}", "Plain answer {not json}", []),
    (ToolCallFormat.MISTRAL,
     f"[TOOL_CALLS][{json.dumps(WEATHER)}]", "", [("get_weather", {"city": "Paris"})]),
    (ToolCallFormat.MISTRAL,  # [TOOL_CALLS] is a control token llama.cpp does not render
     f' [{json.dumps(WEATHER)}, {{"name": "get_time", "arguments": {{}}}}]',
     "", [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    (ToolCallFormat.MISTRAL, "[1] is a citation", "[1] is a citation", []),
    (ToolCallFormat.DEEPSEEK_R1, DEEPSEEK, "",
     [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]),
    (ToolCallFormat.DEEPSEEK_R1, "No tools needed.", "No tools needed.", []),
]


def run(call_format: ToolCallFormat, pieces: list[str]) -> tuple[str, list[ToolCall]]:
    stream = ToolCallStream(call_format)
    output: list[str | ToolCall] = []
    for piece in pieces:
        output += stream.push(piece)
    output += stream.finish()
    text = "".join(item for item in output if isinstance(item, str))
    calls = [item for item in output if isinstance(item, ToolCall)]
    return text, calls


def summary(calls: list[ToolCall]) -> list[tuple[str, object]]:
    return [(call.name, json.loads(call.arguments)) for call in calls]


@pytest.mark.parametrize(("call_format", "output", "text", "calls"), CASES)
def test_tool_calls_whole_output(call_format: ToolCallFormat, output: str, text: str,
                                 calls: list[tuple[str, object]]) -> None:
    got_text, got_calls = run(call_format, [output])
    assert got_text == text
    assert summary(got_calls) == calls


@pytest.mark.parametrize(("call_format", "output", "text", "calls"), CASES)
def test_tool_calls_every_cut(call_format: ToolCallFormat, output: str, text: str,
                              calls: list[tuple[str, object]]) -> None:
    for cut in range(len(output) + 1):
        got_text, got_calls = run(call_format, [output[:cut], output[cut:]])
        assert got_text == text, cut
        assert summary(got_calls) == calls, cut


@pytest.mark.parametrize(("call_format", "output", "text", "calls"), CASES)
def test_tool_calls_one_character_pieces(call_format: ToolCallFormat, output: str, text: str,
                                         calls: list[tuple[str, object]]) -> None:
    got_text, got_calls = run(call_format, list(output))
    assert got_text == text
    assert summary(got_calls) == calls


def test_tool_call_ids_are_unique() -> None:
    _, calls = run(ToolCallFormat.HERMES, [CASES[1][1]])
    ids = [call.id for call in calls]
    assert len(set(ids)) == len(ids)
    assert all(call_id.startswith("call_") for call_id in ids)


def test_text_before_call_streams_early() -> None:
    stream = ToolCallStream(ToolCallFormat.HERMES)
    assert stream.push("Checking the weather") == ["Checking the weather"]
    assert stream.push(" now <tool") == [" now "]
    assert stream.push("_call>{") == []


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ '<tool_call>' }}", ToolCallFormat.HERMES),
    ("{{ '[TOOL_CALLS]' }}", ToolCallFormat.MISTRAL),
    ("{{ '<｜tool▁calls▁begin｜>' }}", ToolCallFormat.DEEPSEEK_R1),
    ("{{ '<|python_tag|>' }}", ToolCallFormat.LLAMA3_JSON),
    ("{{ '<|im_start|>' }}", ToolCallFormat.HERMES),
])
def test_detect_format(source: str, expected: ToolCallFormat) -> None:
    assert detect_format(source) is expected
