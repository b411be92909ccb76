"""Putting the original values back in place of placeholders in a chat response.

In ``redact-input`` mode with ``restore_output`` on, the model reads placeholders such as
``[PHONE_1]`` and may write them in its response. ``RestoringParser`` reads the generated text
like ``ChatOutputParser`` and restores the placeholders in each event it returns: content and
reasoning through one ``StreamRestorer`` each, so a placeholder split over several deltas is
held back until it is complete, and tool-call arguments value by value, so they stay valid
JSON. Streamed (OpenAI SSE, Ollama NDJSON) and whole responses go through the same parser.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from enclave.api.privacy import map_json_text
from enclave.output.parser import (
    ChatOutputParser,
    ContentText,
    OutputEvent,
    ReasoningText,
    ToolCallOutput,
)
from enclave.output.plan import ChatPlan
from enclave.policy import PrivacyMode, ProtectedRequest


def restores_output(protected: ProtectedRequest[Any]) -> bool:
    """Return whether the response of this request can contain placeholders to restore."""
    return (protected.mode is PrivacyMode.REDACT_INPUT and protected.restore_output
            and len(protected.placeholders) > 0)


def output_parser(plan: ChatPlan, protected: ProtectedRequest[Any]) -> ChatOutputParser:
    """Return the parser for a chat response: a restoring one when placeholders can occur."""
    if restores_output(protected):
        return RestoringParser(plan, protected)
    return ChatOutputParser(plan)


class RestoringParser(ChatOutputParser):
    """A ChatOutputParser whose events carry the original values instead of placeholders.

    Events keep their order. Text held back in one field is released before an event of
    another field, because the parser has then finished that field's text up to this point.
    """

    def __init__(self, plan: ChatPlan, protected: ProtectedRequest[Any]) -> None:
        super().__init__(plan)
        self._protected = protected
        self._reasoning = protected.stream_restorer()
        self._content = protected.stream_restorer()

    def push(self, text: str) -> list[OutputEvent]:
        return self._restore(super().push(text))

    def finish(self) -> list[OutputEvent]:
        events = self._restore(super().finish())
        return events + self._release_reasoning() + self._release_content()

    def _restore(self, events: list[OutputEvent]) -> list[OutputEvent]:
        restored: list[OutputEvent] = []
        for event in events:
            if isinstance(event, ReasoningText):
                restored += self._release_content()
                restored += _nonempty(ReasoningText(self._reasoning.push(event.text)))
            elif isinstance(event, ContentText):
                restored += self._release_reasoning()
                restored += _nonempty(ContentText(self._content.push(event.text)))
            else:
                restored += self._release_reasoning() + self._release_content()
                restored.append(self._restore_call(event))
        return restored

    def _restore_call(self, event: ToolCallOutput) -> ToolCallOutput:
        arguments = map_json_text(event.call.arguments, self._protected.output_for_caller)
        return ToolCallOutput(event.index, replace(event.call, arguments=arguments))

    def _release_reasoning(self) -> list[OutputEvent]:
        return _nonempty(ReasoningText(self._reasoning.finish()))

    def _release_content(self) -> list[OutputEvent]:
        return _nonempty(ContentText(self._content.finish()))


def _nonempty(event: ReasoningText | ContentText) -> list[OutputEvent]:
    return [event] if event.text else []
