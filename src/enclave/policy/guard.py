"""Applying the privacy mode to one request: what the model, the logs and the caller see.

The HTTP layer calls ``PrivacyGuard.protect_messages`` (chat) or ``protect_prompt``
(completions) once per request and then uses the returned ProtectedRequest:

    protected = guard.protect_messages(request.messages)
    engine input        -> protected.model_input
    audit/log input     -> protected.logged_input, protected.counts
    whole response      -> protected.output_for_caller(text), protected.output_for_log(text)
    streamed response   -> restorer = protected.stream_restorer(); restorer.push(delta) ...
                           restorer.finish()

What each mode changes:

==============  ============  ============  ====================================
mode            model input   logged input  response to the caller
==============  ============  ============  ====================================
off             raw           raw           as generated
detect          raw           raw           as generated (counts recorded)
redact-logs     raw           placeholders  as generated
redact-input    placeholders  placeholders  placeholders restored if
                                            ``restore_output`` (else as generated)
==============  ============  ============  ====================================

In both redact modes ``output_for_log`` redacts the model output with the request's
placeholder map, so a value the model repeats, or a new one it writes, does not reach the
log either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from enclave.policy.redactor import Message, PlaceholderMap, Redactor, restore
from enclave.policy.settings import PrivacyMode, PrivacySettings
from enclave.policy.streaming import StreamRestorer

InputT = TypeVar("InputT")


@dataclass
class ProtectedRequest(Generic[InputT]):
    """The outcome of the privacy mode for one request (a prompt or a list of messages)."""

    mode: PrivacyMode
    model_input: InputT
    logged_input: InputT
    counts: dict[str, int]
    placeholders: PlaceholderMap
    restore_output: bool
    redactor: Redactor = field(repr=False)

    def output_for_caller(self, text: str) -> str:
        """Return the complete model output as the caller should receive it."""
        if self.mode is PrivacyMode.REDACT_INPUT and self.restore_output:
            return restore(text, self.placeholders.as_dict())
        return text

    def stream_restorer(self) -> StreamRestorer:
        """Return a restorer for a streamed response.

        The restorer passes text through unchanged when nothing is to be restored.
        """
        if self.mode is PrivacyMode.REDACT_INPUT and self.restore_output:
            return StreamRestorer(self.placeholders.as_dict())
        return StreamRestorer({})

    def output_for_log(self, text: str) -> str:
        """Return the model output as the audit trail and logs may store it."""
        if self.mode in (PrivacyMode.REDACT_LOGS, PrivacyMode.REDACT_INPUT):
            return self.redactor.redact(text, self.placeholders).text
        return text


class PrivacyGuard:
    """Applies one privacy profile (the ``[privacy]`` settings) to requests."""

    def __init__(self, settings: PrivacySettings | None = None) -> None:
        self.settings = settings or PrivacySettings()
        self.redactor = Redactor(self.settings)

    @property
    def mode(self) -> PrivacyMode:
        return self.settings.mode

    def protect_messages(
        self, messages: Sequence[Mapping[str, Any]]
    ) -> ProtectedRequest[list[Message]]:
        """Apply the mode to chat messages, sharing one placeholder map across them."""
        placeholders = PlaceholderMap()
        raw = [dict(message) for message in messages]
        if self.mode is PrivacyMode.OFF:
            return self._request(raw, raw, {}, placeholders)
        if self.mode is PrivacyMode.DETECT:
            return self._request(raw, raw, self.redactor.count_messages(raw), placeholders)

        redaction = self.redactor.redact_messages(raw, placeholders)
        model_input = redaction.messages if self.mode is PrivacyMode.REDACT_INPUT else raw
        return self._request(model_input, redaction.messages, redaction.counts, placeholders)

    def protect_prompt(self, prompt: str) -> ProtectedRequest[str]:
        """Apply the mode to a plain-text prompt."""
        placeholders = PlaceholderMap()
        if self.mode is PrivacyMode.OFF:
            return self._request(prompt, prompt, {}, placeholders)
        if self.mode is PrivacyMode.DETECT:
            return self._request(prompt, prompt, self.redactor.count(prompt), placeholders)

        redaction = self.redactor.redact(prompt, placeholders)
        model_input = redaction.text if self.mode is PrivacyMode.REDACT_INPUT else prompt
        return self._request(model_input, redaction.text, redaction.counts, placeholders)

    def _request(
        self, model_input: InputT, logged_input: InputT, counts: dict[str, int],
        placeholders: PlaceholderMap,
    ) -> ProtectedRequest[InputT]:
        return ProtectedRequest(
            mode=self.mode,
            model_input=model_input,
            logged_input=logged_input,
            counts=counts,
            placeholders=placeholders,
            restore_output=self.settings.restore_output,
            redactor=self.redactor,
        )
