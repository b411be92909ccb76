"""Split DeepSeek-R1 style output into reasoning and answer.

Models of that family write their chain of thought between ``<think>`` and ``</think>`` and
the answer after it. Some chat templates (the R1 distills among them) end the prompt with
``<think>``, so the output starts inside the reasoning and contains only the closing tag.

``ReasoningSplitter`` works on a stream of text pieces that may cut a tag anywhere: text that
could be the start of a tag is held back until the next piece shows whether it is one.
Only a ``<think>`` at the very start of the output (after whitespace) opens reasoning; the
same tag later in the answer is answer text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def template_thinks(template_source: str) -> bool:
    """Return whether a chat template is written for a model that emits <think> blocks."""
    return THINK_OPEN in template_source or THINK_CLOSE in template_source


def prompt_opens_reasoning(prompt: str) -> bool:
    """Return whether the rendered prompt ends inside an unclosed <think> block."""
    start = prompt.rfind(THINK_OPEN)
    if start < 0:
        return False
    return prompt[start + len(THINK_OPEN) :].strip() == ""


@dataclass(slots=True)
class Split:
    """Text released by one step, sorted into reasoning and answer."""

    reasoning: str = ""
    content: str = ""


class _State(enum.Enum):
    START = "start"  # nothing but whitespace yet; the output may still open with <think>
    REASONING_START = "reasoning_start"  # inside <think>, leading whitespace is dropped
    REASONING = "reasoning"
    CONTENT_START = "content_start"  # after </think>, leading whitespace is dropped
    CONTENT = "content"


def _partial_suffix(text: str, tag: str) -> int:
    """Return the length of the longest suffix of text that is a proper prefix of tag."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


class ReasoningSplitter:
    """Sort streamed text into reasoning and answer; ``opened`` means the prompt ended in <think>.

    Reasoning that never closes stays reasoning, as DeepSeek's API returns it when the
    generation stops inside the thinking block.
    """

    def __init__(self, *, opened: bool) -> None:
        self._state = _State.REASONING_START if opened else _State.START
        self._pending = ""

    def push(self, text: str) -> Split:
        """Add generated text; return what can be released now."""
        out = Split()
        self._pending += text
        progressed = True
        while progressed and self._pending:
            progressed = self._step(out)
        return out

    def finish(self) -> Split:
        """Release held-back text once generation has ended."""
        out = Split()
        pending, self._pending = self._pending, ""
        if self._state is _State.REASONING:
            out.reasoning = pending
        elif self._state is _State.REASONING_START:
            out.reasoning = pending.lstrip()
        elif self._state in (_State.START, _State.CONTENT):
            out.content = pending
        return out

    def _step(self, out: Split) -> bool:
        """Consume what the current state can decide; return whether anything changed."""
        state = self._state
        if state is _State.START:
            return self._step_start(out)
        if state is _State.REASONING_START:
            return self._skip_whitespace(_State.REASONING)
        if state is _State.REASONING:
            return self._step_reasoning(out)
        if state is _State.CONTENT_START:
            return self._skip_whitespace(_State.CONTENT)
        out.content += self._pending
        self._pending = ""
        return False

    def _step_start(self, out: Split) -> bool:
        stripped = self._pending.lstrip()
        if not stripped:
            return False  # only whitespace so far: it may precede <think>
        if stripped.startswith(THINK_OPEN):
            self._pending = stripped[len(THINK_OPEN) :]
            self._state = _State.REASONING_START
            return True
        if THINK_OPEN.startswith(stripped):
            return False  # "<thi" could still become the tag
        self._state = _State.CONTENT
        out.content += self._pending
        self._pending = ""
        return False

    def _step_reasoning(self, out: Split) -> bool:
        end = self._pending.find(THINK_CLOSE)
        if end >= 0:
            out.reasoning += self._pending[:end]
            self._pending = self._pending[end + len(THINK_CLOSE) :]
            self._state = _State.CONTENT_START
            return True
        hold = _partial_suffix(self._pending, THINK_CLOSE)
        cut = len(self._pending) - hold
        out.reasoning += self._pending[:cut]
        self._pending = self._pending[cut:]
        return False

    def _skip_whitespace(self, next_state: _State) -> bool:
        stripped = self._pending.lstrip()
        self._pending = stripped
        if stripped:
            self._state = next_state
            return True
        return False
