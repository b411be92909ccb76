"""The ``[privacy]`` settings section: what personal data is detected and what happens to it.

Example::

    [privacy]
    mode = "redact-input"          # off | detect | redact-logs | redact-input
    restore_output = true
    kinds = ["ID_CARD", "PHONE", "BANK_CARD", "USCC", "EMAIL", "IP_ADDRESS", "PASSPORT"]

    [privacy.custom_terms]
    PROJECT = ["Falcon", "猎鹰计划"]

    [privacy.custom_patterns]
    EMPLOYEE_ID = ["EMP-[0-9]{6}"]

The default mode is ``redact-logs``. It keeps raw personal data out of the audit trail and
the logs, which a regulated deployment needs first. It does not change what the model
reads, so responses stay exactly as good as without redaction. ``redact-input`` also hides
the values from the model; it is the stronger choice when the model or its host is less
trusted than the gateway, but placeholders can make some responses worse (a model cannot
check a placeholder's digits), so it is opt-in.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator

from enclave.policy.detectors import Kind
from enclave.section import Section

_KIND_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class PrivacyMode(StrEnum):
    """Treatment of the personal data found in a request."""

    OFF = "off"
    """Nothing is scanned."""
    DETECT = "detect"
    """Findings are counted per kind; text reaches the model and the logs unchanged."""
    REDACT_LOGS = "redact-logs"
    """The audit trail and logs get placeholders; the model still reads the raw values."""
    REDACT_INPUT = "redact-input"
    """The model reads placeholders too. The response can have them restored for the caller."""


class PrivacySettings(Section):
    mode: PrivacyMode = Field(
        PrivacyMode.REDACT_LOGS,
        description="off, detect (count only), redact-logs (audit trail and logs see "
        "placeholders) or redact-input (the model sees placeholders as well).",
    )
    restore_output: bool = Field(
        True, description="In redact-input mode, put the original values back in place of "
        "the placeholders in the response returned to the caller.",
    )
    kinds: list[Kind] = Field(
        default_factory=lambda: list(Kind),
        description="Built-in kinds to detect. Default: all of them.",
    )
    passport_context: bool = Field(
        True, description="Report a passport number only when a word such as 护照 or "
        "passport appears near it; passport numbers carry no check digit.",
    )
    custom_terms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Kind name -> exact terms (project code names, client names) to redact, "
        "matched case-insensitively.",
    )
    custom_patterns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Kind name -> regular expressions (Python re syntax) to redact.",
    )

    @field_validator("custom_terms")
    @classmethod
    def _check_terms(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, terms in value.items():
            _check_kind_name(kind)
            if not terms or any(not term.strip() for term in terms):
                raise ValueError(
                    f"custom_terms.{kind} must list at least one term and no empty ones; "
                    "remove the empty strings"
                )
        return value

    @field_validator("custom_patterns")
    @classmethod
    def _check_patterns(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, patterns in value.items():
            _check_kind_name(kind)
            if not patterns:
                raise ValueError(f"custom_patterns.{kind} must list at least one pattern")
            for pattern in patterns:
                _check_pattern(kind, pattern)
        return value


def _check_kind_name(kind: str) -> None:
    if not _KIND_NAME.fullmatch(kind):
        raise ValueError(
            f"kind name {kind!r} is invalid; use upper-case letters, digits and underscores, "
            "starting with a letter (for example PROJECT_NAME)"
        )
    if kind in Kind.__members__:
        raise ValueError(
            f"kind name {kind!r} is a built-in kind; choose another name for custom data"
        )


def _check_pattern(kind: str, pattern: str) -> None:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"custom_patterns.{kind} pattern {pattern!r} does not compile: {exc}; "
            "fix the regular expression (Python re syntax)"
        ) from None
    if compiled.fullmatch("") is not None:
        raise ValueError(
            f"custom_patterns.{kind} pattern {pattern!r} matches the empty string; "
            "make it require at least one character"
        )
