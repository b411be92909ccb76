"""The privacy mode as the request path applies it: what the model, the audit trail and the
logs receive, and the findings counted for metrics.

Routes call one ``protect_*`` method after validating the body and before ``accept()``:

* ``protect_chat`` for chat messages (OpenAI chat, Ollama chat and generate). It covers every
  text a template renders: ``content`` (text parts are joined into it before this step),
  earlier ``reasoning_content``, tool results (``role: tool`` content) and the arguments of
  earlier tool calls. Arguments are redacted value by value (JSON strings and integers), so
  they stay valid JSON.
* ``protect_prompt`` for the completion prompt.
* ``protect_embedding_inputs`` for embedding and rerank inputs. These always reach the model
  unchanged, because placeholders would change the vectors and the ranking; in both redact
  modes only the audit trail and the logs get placeholders.

Each records the counts per kind in ``record.attributes["pii"]`` and the mode in
``record.attributes["privacy_mode"]``. After the response, ``request_finished`` counts the
personal data in the response as the caller received it (``record.attributes["pii_response"]``)
for the audit close record and the metrics.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from enclave.api.lifecycle import RequestRecord
from enclave.policy import PrivacyGuard, PrivacyMode, PrivacySettings, ProtectedRequest
from enclave.policy.redactor import Message

logger = logging.getLogger(__name__)

PROTECTED_ATTRIBUTE = "protected_request"


class PrivacyLayer:
    """The ``[privacy]`` settings as applied to requests, also a request observer and a stats
    provider."""

    def __init__(self, settings: PrivacySettings | None = None) -> None:
        self.guard = PrivacyGuard(settings)
        self._input_findings: Counter[str] = Counter()
        self._output_findings: Counter[str] = Counter()
        self._requests_scanned = 0
        self._requests_with_findings = 0

    @property
    def mode(self) -> PrivacyMode:
        return self.guard.mode

    def protect_chat(self, record: RequestRecord,
                     messages: list[dict[str, Any]]) -> ProtectedRequest[list[Message]]:
        """Apply the mode to chat messages, with one placeholder map for every text in them."""
        texts: list[str] = []

        def collect(text: str) -> str:
            texts.append(text)
            return text

        map_message_texts(messages, collect)
        protected = self.guard.protect_messages([{"role": "user", "content": text}
                                                 for text in texts])
        model_texts = iter([str(entry["content"]) for entry in protected.model_input])
        logged_texts = iter([str(entry["content"]) for entry in protected.logged_input])
        protected = replace(
            protected,
            model_input=map_message_texts(messages, lambda _: next(model_texts)),
            logged_input=map_message_texts(messages, lambda _: next(logged_texts)),
        )
        self._note(record, protected)
        return protected

    def protect_prompt(self, record: RequestRecord, prompt: str) -> ProtectedRequest[str]:
        """Apply the mode to a completion prompt."""
        protected = self.guard.protect_prompt(prompt)
        self._note(record, protected)
        return protected

    def protect_embedding_inputs(self, record: RequestRecord, texts: list[str]) -> list[str]:
        """Count the personal data in embedding or rerank inputs and return the texts to log.

        The model always embeds the raw texts, whatever the mode.
        """
        protected = self.guard.protect_messages([{"role": "user", "content": text}
                                                 for text in texts])
        self._count_input(record, protected.counts)
        return [str(entry["content"]) for entry in protected.logged_input]

    def text_for_log(self, text: str) -> str:
        """Return text as a log line may show it: redacted in both redact modes.

        For messages that can quote request values, such as a validation error's
        "(got ...)".
        """
        if self.mode in (PrivacyMode.REDACT_LOGS, PrivacyMode.REDACT_INPUT):
            return self.guard.redactor.redact(text).text
        return text

    def _note(self, record: RequestRecord, protected: ProtectedRequest[Any]) -> None:
        self._count_input(record, protected.counts)
        if self.mode is not PrivacyMode.OFF:
            record.attributes[PROTECTED_ATTRIBUTE] = protected
            record.output_parts = []

    def _count_input(self, record: RequestRecord, counts: dict[str, int]) -> None:
        record.attributes["pii"] = dict(counts)
        record.attributes["privacy_mode"] = str(self.mode)
        if self.mode is PrivacyMode.OFF:
            return
        self._requests_scanned += 1
        if counts:
            self._requests_with_findings += 1
            self._input_findings.update(counts)
            logger.debug("Personal data in the request: %s (privacy mode %s)",
                         _describe(counts), self.mode)

    # Request observer

    def request_accepted(self, record: RequestRecord) -> None:
        """Do nothing: the route has already applied the mode before accepting."""

    def request_finished(self, record: RequestRecord) -> None:
        """Count the personal data in the response the caller received."""
        protected = record.attributes.pop(PROTECTED_ATTRIBUTE, None)
        parts, record.output_parts = record.output_parts, None
        if protected is None or not parts:
            return
        counts = self.guard.redactor.count(protected.output_for_caller("".join(parts)))
        record.attributes["pii_response"] = counts
        if counts:
            self._output_findings.update(counts)
            logger.debug("Personal data in the response: %s", _describe(counts))

    # Metrics

    def stats(self) -> dict[str, int]:
        """Return the counters for metrics: requests scanned, requests with findings, and
        findings per kind in requests (``input_<kind>_total``) and responses
        (``output_<kind>_total``)."""
        figures = {
            "requests_scanned_total": self._requests_scanned,
            "requests_with_findings_total": self._requests_with_findings,
        }
        for kind in self.guard.redactor.kinds:
            name = kind.lower()
            figures[f"input_{name}_total"] = self._input_findings[kind]
            figures[f"output_{name}_total"] = self._output_findings[kind]
        return figures


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Return the newest user message: the query an audit excerpt shows."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def map_message_texts(messages: list[dict[str, Any]],
                      transform: Callable[[str], str]) -> list[dict[str, Any]]:
    """Return copies of chat messages with ``transform`` applied to each text in them.

    Texts are visited in a fixed order (per message: content, reasoning_content, then the
    tool calls' arguments), so a first pass can collect them and a second replace them.
    """
    mapped = []
    for message in messages:
        copied = dict(message)
        for name in ("content", "reasoning_content"):
            if isinstance(copied.get(name), str):
                copied[name] = transform(copied[name])
        if isinstance(copied.get("tool_calls"), list):
            copied["tool_calls"] = [_map_call(call, transform) for call in copied["tool_calls"]]
        mapped.append(copied)
    return mapped


def _map_call(call: Any, transform: Callable[[str], str]) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    arguments = map_json_text(function["arguments"], transform)
    return {**call, "function": {**function, "arguments": arguments}}


def map_json_text(text: str, transform: Callable[[str], str]) -> str:
    """Apply ``transform`` to the string and integer values of a JSON text.

    The text comes back unchanged unless a value changed. A changed integer becomes a string
    (a placeholder is not a number), so the result is still valid JSON. Text that is not
    JSON is transformed as a whole.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return transform(text)
    changed = False

    def visit(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, str):
            result = transform(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            result = transform(str(item))
            if result == str(item):
                return item
        elif isinstance(item, list):
            return [visit(element) for element in item]
        elif isinstance(item, dict):
            return {key: visit(element) for key, element in item.items()}
        else:
            return item
        changed = changed or result != item
        return result

    mapped = visit(value)
    return json.dumps(mapped, ensure_ascii=False) if changed else text


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind}={count}" for kind, count in sorted(counts.items()))
