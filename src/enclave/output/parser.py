"""Read generated text as reasoning, answer text and tool calls, in streaming order."""

from __future__ import annotations

from dataclasses import dataclass, field

from enclave.output.plan import ChatPlan
from enclave.output.reasoning import ReasoningSplitter, Split
from enclave.output.tool_calls import ToolCall, ToolCallStream


@dataclass(frozen=True, slots=True)
class ReasoningText:
    text: str


@dataclass(frozen=True, slots=True)
class ContentText:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallOutput:
    """A complete tool call; ``index`` counts the calls of this response from 0."""

    index: int
    call: ToolCall


OutputEvent = ReasoningText | ContentText | ToolCallOutput


@dataclass(slots=True)
class ChatOutput:
    """A whole response, for non-streaming replies."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class ChatOutputParser:
    """Apply a plan's reasoning split and tool-call parsing to streamed text."""

    def __init__(self, plan: ChatPlan) -> None:
        self.splits_reasoning = plan.split_reasoning
        self._splitter = ReasoningSplitter(opened=plan.reasoning_opened) if (
            plan.split_reasoning) else None
        self._tools = ToolCallStream(plan.tool_format) if plan.tool_format else None
        self._calls = 0

    @property
    def has_tool_calls(self) -> bool:
        return self._calls > 0

    def push(self, text: str) -> list[OutputEvent]:
        """Add generated text; return the events it completes."""
        split = self._splitter.push(text) if self._splitter else Split(content=text)
        return self._events(split, final=False)

    def finish(self) -> list[OutputEvent]:
        """Release everything held back, once generation has ended."""
        split = self._splitter.finish() if self._splitter else Split()
        return self._events(split, final=True)

    def _events(self, split: Split, *, final: bool) -> list[OutputEvent]:
        events: list[OutputEvent] = []
        if split.reasoning:
            events.append(ReasoningText(split.reasoning))
        if self._tools is None:
            if split.content:
                events.append(ContentText(split.content))
            return events
        pieces = self._tools.push(split.content) if split.content else []
        if final:
            pieces += self._tools.finish()
        for piece in pieces:
            if isinstance(piece, str):
                if piece:
                    events.append(ContentText(piece))
            else:
                events.append(ToolCallOutput(self._calls, piece))
                self._calls += 1
        return events


def collect(events: list[OutputEvent], into: ChatOutput) -> None:
    """Add events to a whole response."""
    for event in events:
        if isinstance(event, ReasoningText):
            into.reasoning += event.text
        elif isinstance(event, ContentText):
            into.content += event.text
        else:
            into.tool_calls.append(event.call)
