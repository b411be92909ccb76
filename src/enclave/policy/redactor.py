"""Scanning text for personal data, replacing it with placeholders, and putting it back.

    redactor = Redactor(settings.privacy)
    redaction = redactor.redact("手机13812345678，邮箱a@example.com")
    redaction.text          # "手机[PHONE_1]，邮箱[EMAIL_1]"
    redaction.placeholders  # {"[PHONE_1]": "13812345678", "[EMAIL_1]": "a@example.com"}
    restore(redaction.text, redaction.placeholders)   # the original text

Placeholders are numbered per kind in order of first appearance. The same value gets the
same placeholder everywhere it appears in one request when every call for that request gets
the same PlaceholderMap, which ``redact_messages`` does for a chat. Values are
compared exactly as written, so ``13812345678`` and ``138 1234 5678`` get two placeholders
and each is restored as it was written.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from enclave.policy.detectors import (
    Detector,
    builtin_detectors,
    custom_pattern_detector,
    custom_term_detector,
    fold_fullwidth,
)
from enclave.policy.settings import PrivacySettings

PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*_[0-9]+\]")

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data: its kind and its [start, end) offsets in the text."""

    kind: str
    start: int
    end: int
    value: str


@dataclass(frozen=True, slots=True)
class Redaction:
    """Redacted text, the placeholder -> value map so far, and findings per kind in it."""

    text: str
    placeholders: dict[str, str]
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class MessagesRedaction:
    """Redacted chat messages with one placeholder map and counts summed over them."""

    messages: list[Message]
    placeholders: dict[str, str]
    counts: dict[str, int]


class PlaceholderMap:
    """Placeholders of one request: the same value always gets the same placeholder.

    Placeholder-shaped text already present in the input is reserved, so a literal
    ``[PHONE_1]`` typed by the user is never given to a value and then "restored".
    """

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._reserved: set[str] = set()
        self._last_number: Counter[str] = Counter()

    def reserve_existing(self, text: str) -> None:
        """Reserve every placeholder-shaped token that ``text`` already contains."""
        if "[" in text:
            self._reserved.update(PLACEHOLDER.findall(text))

    def placeholder_for(self, kind: str, value: str) -> str:
        """Return the placeholder of ``value``, allocating the next free one on first use."""
        key = (kind, value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing

        while True:
            self._last_number[kind] += 1
            placeholder = f"[{kind}_{self._last_number[kind]}]"
            if placeholder not in self._reserved:
                break
        self._by_value[key] = placeholder
        self._values[placeholder] = value
        return placeholder

    def as_dict(self) -> dict[str, str]:
        """Return a copy of the placeholder -> original value map."""
        return dict(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Redactor:
    """Finder and replacer of personal data, built from the privacy settings.

    A Redactor holds only compiled patterns, so one instance can serve every request and
    thread at once. Per-request state lives in PlaceholderMap.
    """

    def __init__(self, settings: PrivacySettings | None = None) -> None:
        settings = settings or PrivacySettings()
        detectors = builtin_detectors(settings.kinds, settings.passport_context)
        for kind, terms in settings.custom_terms.items():
            detectors.append(custom_term_detector(kind, terms))
        for kind, patterns in settings.custom_patterns.items():
            detectors.extend(custom_pattern_detector(kind, pattern) for pattern in patterns)
        self._detectors: tuple[Detector, ...] = tuple(detectors)

    @property
    def kinds(self) -> list[str]:
        """Names of the kinds this redactor detects, without repeats."""
        return list(dict.fromkeys(detector.kind for detector in self._detectors))

    def scan(self, text: str) -> list[Finding]:
        """Return the findings in ``text``, in order and without overlaps.

        Where candidates overlap, the one that starts first wins, then the longer one,
        then the one of the earlier detector (a valid resident ID beats a Luhn-valid
        bank card on the same digits).
        """
        folded = fold_fullwidth(text)
        candidates: list[tuple[int, int, int, int, str]] = []
        for priority, detector in enumerate(self._detectors):
            for start, end in detector.find(folded):
                candidates.append((start, start - end, priority, end, detector.kind))
        candidates.sort()

        findings: list[Finding] = []
        covered_until = 0
        for start, _, _, end, kind in candidates:
            if start >= covered_until:
                findings.append(Finding(kind, start, end, text[start:end]))
                covered_until = end
        return findings

    def count(self, text: str) -> dict[str, int]:
        """Return the number of findings per kind in ``text``."""
        return dict(Counter(finding.kind for finding in self.scan(text)))

    def redact(self, text: str, placeholders: PlaceholderMap | None = None) -> Redaction:
        """Replace every finding in ``text`` with its placeholder.

        Pass the request's PlaceholderMap so that values seen in earlier texts of the same
        request keep their placeholders; ``Redaction.placeholders`` then covers them all.
        """
        placeholders = placeholders if placeholders is not None else PlaceholderMap()
        placeholders.reserve_existing(text)
        findings = self.scan(text)

        pieces: list[str] = []
        position = 0
        for finding in findings:
            pieces.append(text[position:finding.start])
            pieces.append(placeholders.placeholder_for(finding.kind, finding.value))
            position = finding.end
        pieces.append(text[position:])

        counts = dict(Counter(finding.kind for finding in findings))
        return Redaction("".join(pieces), placeholders.as_dict(), counts)

    def redact_messages(
        self, messages: Sequence[Mapping[str, Any]], placeholders: PlaceholderMap | None = None
    ) -> MessagesRedaction:
        """Redact the text content of chat messages with one shared placeholder map.

        ``content`` may be a string or a list of parts, of which the ``{"type": "text"}``
        parts are redacted. Other fields and parts (roles, images) are copied unchanged, and
        the input messages are not modified.
        """
        placeholders = placeholders if placeholders is not None else PlaceholderMap()
        for text in _message_texts(messages):
            placeholders.reserve_existing(text)

        counts: Counter[str] = Counter()

        def redact_text(text: str) -> str:
            redaction = self.redact(text, placeholders)
            counts.update(redaction.counts)
            return redaction.text

        redacted = [_map_content(message, redact_text) for message in messages]
        return MessagesRedaction(redacted, placeholders.as_dict(), dict(counts))

    def count_messages(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Return the number of findings per kind over the text content of chat messages."""
        counts: Counter[str] = Counter()
        for text in _message_texts(messages):
            counts.update(finding.kind for finding in self.scan(text))
        return dict(counts)


def restore(text: str, placeholders: Mapping[str, str]) -> str:
    """Replace every known placeholder in ``text`` with its original value.

    Placeholders not in the map, and ones the model altered (``[PHONE 1]``), stay as they
    are.
    """
    if not placeholders or "[" not in text:
        return text
    return PLACEHOLDER.sub(lambda match: placeholders.get(match.group(), match.group()), text)


def _message_texts(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    texts: list[str] = []

    def collect(text: str) -> str:
        texts.append(text)
        return text

    for message in messages:
        _map_content(message, collect)
    return texts


def _map_content(message: Mapping[str, Any], transform: Callable[[str], str]) -> Message:
    copied = dict(message)
    content = copied.get("content")
    if isinstance(content, str):
        copied["content"] = transform(content)
    elif isinstance(content, list):
        copied["content"] = [_map_part(part, transform) for part in content]
    return copied


def _map_part(part: Any, transform: Callable[[str], str]) -> Any:
    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(
            part.get("text"), str):
        return {**part, "text": transform(part["text"])}
    return part
