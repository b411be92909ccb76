"""Tool calls in model output: the formats models are trained on, and a streaming parser.

Formats, by the marker the chat template uses:

* ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per
  call (Qwen 2.5 and 3, Hermes 2 and 3). Enclave's own tool prompt, used for templates
  without tool support, asks for this format too.
* ``llama3_json``: the whole answer is ``{"name": ..., "parameters": {...}}`` (Llama 3.1,
  3.2 and 3.3 with JSON tool calling).
* ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]``. ``[TOOL_CALLS]`` is a
  control token that llama.cpp does not render, so a bare JSON array at the start of the
  answer is read as the same thing.
* ``deepseek_r1``: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME``
  followed by the arguments in a fenced json block and ``<｜tool▁call▁end｜>``, closed by
  ``<｜tool▁calls▁end｜>``.

A block that does not parse as a call is returned as ordinary text, never dropped.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
MISTRAL_MARKER = "[TOOL_CALLS]"
LLAMA3_PYTHON_TAG = "<|python_tag|>"
DEEPSEEK_CALLS_OPEN = "<｜tool▁calls▁begin｜>"
DEEPSEEK_CALLS_CLOSE = "<｜tool▁calls▁end｜>"
DEEPSEEK_CALL_OPEN = "<｜tool▁call▁begin｜>"
DEEPSEEK_CALL_CLOSE = "<｜tool▁call▁end｜>"
DEEPSEEK_SEP = "<｜tool▁sep｜>"

_DEEPSEEK_CALL = re.compile(
    re.escape(DEEPSEEK_CALL_OPEN) + r"\s*(\w+)\s*" + re.escape(DEEPSEEK_SEP)
    + r"\s*([^\n`]+?)\s*```(?:json)?\s*(.*?)\s*```"
    + r"(?:\s*" + re.escape(DEEPSEEK_CALL_CLOSE) + ")?",
    re.DOTALL,
)


class ToolCallFormat(enum.Enum):
    HERMES = "hermes"
    LLAMA3_JSON = "llama3_json"
    MISTRAL = "mistral"
    DEEPSEEK_R1 = "deepseek_r1"


def detect_format(template_source: str) -> ToolCallFormat:
    """Return the tool-call format a chat template renders; hermes when it shows none."""
    if DEEPSEEK_CALLS_OPEN in template_source or DEEPSEEK_CALL_OPEN in template_source:
        return ToolCallFormat.DEEPSEEK_R1
    if MISTRAL_MARKER in template_source:
        return ToolCallFormat.MISTRAL
    if HERMES_OPEN in template_source:
        return ToolCallFormat.HERMES
    if LLAMA3_PYTHON_TAG in template_source or (
        "ipython" in template_source and '"parameters"' in template_source
    ):
        return ToolCallFormat.LLAMA3_JSON
    return ToolCallFormat.HERMES


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One parsed call; ``arguments`` is a JSON text, as the OpenAI API carries it."""

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> Any:
        """Return the arguments parsed, or the raw text if the model wrote invalid JSON."""
        try:
            return json.loads(self.arguments)
        except json.JSONDecodeError:
            return self.arguments


def call_from_object(value: Any) -> ToolCall | None:
    """Build a call from ``{"name": ..., "arguments" or "parameters": ...}``, else None."""
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=new_call_id(), name=name, arguments=text)


def _decode_all(text: str) -> list[Any] | None:
    """Decode consecutive JSON values separated by whitespace, commas or semicolons."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    while True:
        while index < len(text) and text[index] in " \t\r\n,;":
            index += 1
        if index == len(text):
            return values
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return None
        values.append(value)


def parse_json_calls(text: str) -> list[ToolCall] | None:
    """Parse one or more call objects, or arrays of them; None unless all of it is calls."""
    values = _decode_all(text.strip())
    if not values:
        return None
    calls: list[ToolCall] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        for item in items:
            call = call_from_object(item)
            if call is None:
                return None
            calls.append(call)
    return calls or None


def parse_deepseek_calls(block: str) -> list[ToolCall] | None:
    """Parse the calls between DeepSeek's calls-begin and calls-end markers."""
    calls = []
    for match in _DEEPSEEK_CALL.finditer(block):
        arguments = match.group(3)
        try:
            text = json.dumps(json.loads(arguments), ensure_ascii=False)
        except json.JSONDecodeError:
            return None
        calls.append(ToolCall(id=new_call_id(), name=match.group(2).strip(), arguments=text))
    return calls or None


def _partial_suffix(text: str, marker: str) -> int:
    for length in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0


Piece = str | ToolCall


class ToolCallStream:
    """Separate answer text from tool calls in streamed text, in output order.

    push() and finish() return answer text (str) and calls (ToolCall). Text that may belong
    to a call is held back until the call is complete or shown not to be one.
    """

    def __init__(self, call_format: ToolCallFormat) -> None:
        self._format = call_format
        self._whole_answer = call_format in (ToolCallFormat.LLAMA3_JSON, ToolCallFormat.MISTRAL)
        if call_format is ToolCallFormat.DEEPSEEK_R1:
            self._open, self._close = DEEPSEEK_CALLS_OPEN, DEEPSEEK_CALLS_CLOSE
        else:
            self._open, self._close = HERMES_OPEN, HERMES_CLOSE
        self._pending = ""
        self._in_call = False
        self._buffering = False  # whole-answer formats: the text so far looks like calls
        self._decided = False  # whole-answer formats: the first characters have been judged
        self._released_text = False
        self._after_call = False
        self.calls: list[ToolCall] = []

    def push(self, text: str) -> list[Piece]:
        self._pending += text
        if self._whole_answer:
            return self._push_whole_answer()
        pieces: list[Piece] = []
        while self._scan_markers(pieces):
            pass
        return [piece for piece in pieces if piece != ""]

    def finish(self) -> list[Piece]:
        pending, self._pending = self._pending, ""
        if self._whole_answer:
            if self._buffering:
                calls = self._parse_whole_answer(pending)
                return self._accept(calls) if calls else [pending]
            return [pending] if pending else []
        if self._in_call:
            # Small models often stop right after the JSON, without the closing marker.
            calls = self._parse_block(pending)
            if calls:
                return self._accept(calls)
            logger.debug("An unclosed tool-call block did not parse; returning it as text")
            return [self._release(self._open + pending)]
        if not pending or (self.calls and not pending.strip()):
            return []
        return [self._release(pending)]

    # Marker formats (hermes, deepseek_r1).

    def _scan_markers(self, pieces: list[Piece]) -> bool:
        """Handle one marker if the pending text contains it; return whether one was found."""
        if self._in_call:
            end = self._pending.find(self._close)
            if end < 0:
                return False
            block = self._pending[:end]
            self._pending = self._pending[end + len(self._close) :].lstrip()
            self._in_call = False
            calls = self._parse_block(block)
            if calls:
                pieces.extend(self._accept(calls))
            else:
                logger.debug("A tool-call block did not parse; returning it as text")
                pieces.append(self._release(self._open + block + self._close))
            return True

        start = self._pending.find(self._open)
        if start >= 0:
            before = self._pending[:start]
            if before.strip() or not self._holding_whitespace():
                pieces.append(self._release(before))
            self._pending = self._pending[start + len(self._open) :]
            self._in_call = True
            return True

        hold = _partial_suffix(self._pending, self._open)
        cut = len(self._pending) - hold
        if self._holding_whitespace() and not self._pending[:cut].strip():
            return False  # whitespace before or between calls waits: a call may follow
        if cut:
            pieces.append(self._release(self._pending[:cut]))
            self._pending = self._pending[cut:]
        return False

    def _holding_whitespace(self) -> bool:
        return not self._released_text or self._after_call

    def _parse_block(self, block: str) -> list[ToolCall] | None:
        if self._format is ToolCallFormat.DEEPSEEK_R1:
            return parse_deepseek_calls(block)
        return parse_json_calls(block)

    # Whole-answer formats (llama3_json, mistral).

    def _push_whole_answer(self) -> list[Piece]:
        if self._buffering:
            return []
        if self._decided:
            text, self._pending = self._pending, ""
            return [self._release(text)] if text else []
        stripped = self._pending.lstrip()
        if not stripped:
            return []
        starts = self._call_starts()
        if any(stripped.startswith(start) for start in starts):
            self._buffering = self._decided = True
            return []
        if any(start.startswith(stripped) for start in starts):
            return []  # "[TOOL" could still become the marker
        self._decided = True
        text, self._pending = self._pending, ""
        return [self._release(text)]

    def _call_starts(self) -> tuple[str, ...]:
        if self._format is ToolCallFormat.MISTRAL:
            return (MISTRAL_MARKER, "[{", "[ {", "[\n")
        return ("{", LLAMA3_PYTHON_TAG)

    def _parse_whole_answer(self, text: str) -> list[ToolCall] | None:
        body = text.strip()
        for marker in (MISTRAL_MARKER, LLAMA3_PYTHON_TAG):
            body = body.removeprefix(marker)
        return parse_json_calls(body)

    # Shared.

    def _accept(self, calls: list[ToolCall]) -> list[Piece]:
        self.calls.extend(calls)
        self._after_call = True
        return list(calls)

    def _release(self, text: str) -> str:
        if text:
            self._released_text = True
            self._after_call = False
        return text
