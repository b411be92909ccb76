"""Detectors: one regular expression per kind of personal data, plus a validity check.

A regular expression only proposes candidates. A detector reports a candidate when its
validator accepts it (check digits, dates, address syntax). For kinds without a check digit
it also needs a context word near the candidate. Detectors run on text whose full-width digits,
letters and identifier symbols (and the ideographic space U+3000) are folded to ASCII, one
character for one, so offsets stay those of the original text.

Boundaries: Chinese text puts no spaces around numbers, so a word boundary (``\\b``) does not
work there, because CJK characters are word characters. Each pattern instead rejects a
neighbouring ASCII letter or digit, and a neighbouring ``.`` or ``-`` that joins another
digit, so nothing is found inside a longer number, a decimal or a dashed code.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from enclave.policy.checksums import is_valid_bank_card, is_valid_resident_id, is_valid_uscc


class Kind(StrEnum):
    """Built-in kinds of personal data; the value is also the placeholder prefix."""

    ID_CARD = "ID_CARD"
    PHONE = "PHONE"
    BANK_CARD = "BANK_CARD"
    USCC = "USCC"
    EMAIL = "EMAIL"
    IP_ADDRESS = "IP_ADDRESS"
    PASSPORT = "PASSPORT"


# Words near a passport number (lower case; matched case-insensitively), and how many
# characters before and after the number are searched for them.
PASSPORT_CONTEXT = ("护照", "证件", "passport", "travel document")
CONTEXT_BEFORE = 30
CONTEXT_AFTER = 15

# Full-width characters that occur inside identifiers: digits, letters, "+%-._@" and the
# ideographic space. Full-width punctuation such as "，：（）" stays, because it separates
# identifiers from the text around them.
_FULLWIDTH_TABLE = {
    code: code - 0xFEE0
    for code in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B),
                 0xFF0B, 0xFF05, 0xFF0D, 0xFF0E, 0xFF3F, 0xFF20]
} | {0x3000: 0x20}
_FULLWIDTH = re.compile("[" + "".join(chr(code) for code in _FULLWIDTH_TABLE) + "]")

# Left boundary: the character before the match is not a letter or digit, nor a "." or "-"
# joined to a digit. Grouped numbers ("6222 0212 ...") also reject a digit joined with a
# space, so a match cannot start in the middle of a longer grouped number. Each pattern
# matches its first character and only then looks behind it, one character wider: re finds
# a leading character class quickly but tries a leading lookbehind at every position, which
# made scanning about three times slower.
_LEFT = r"(?<![0-9A-Za-z].)(?<![0-9][.\-].)"
_GROUP_LEFT = r"(?<![0-9A-Za-z].)(?<![0-9][ .\-].)"
# Right boundary: the mirror image, right after the match.
_RIGHT = r"(?![0-9A-Za-z])(?![.\-][0-9])"
_GROUP_RIGHT = r"(?![0-9A-Za-z])(?![ .\-][0-9])"

_RESIDENT_ID = re.compile(r"[1-9]" + _LEFT + r"[0-9]{16}[0-9Xx]" + _RIGHT)

# 11 digits starting 13-19, optionally after +86 or 0086, written 13812345678,
# 138 1234 5678 or 138-1234-5678. Mobile numbers carry no check digit, so the shape is the
# whole validation.
_PHONE = re.compile(
    r"(?:[+0]" + _GROUP_LEFT + r"(?:(?<=\+)86|(?<=0)086)[ \-]?1|1" + _GROUP_LEFT + ")"
    + r"[3-9][0-9](?:[0-9]{8}|(?P<sep>[ \-])[0-9]{4}(?P=sep)[0-9]{4})"
    + _GROUP_RIGHT
)

# 13-19 digits in one run, in groups of four (the last group may be shorter), or in the
# American Express grouping 4-6-5. A group separator is one space or one dash.
_BANK_CARD = re.compile(
    r"[0-9]" + _GROUP_LEFT
    + r"(?:[0-9]{12,18}"
    + r"|[0-9]{3}(?P<sep>[ \-])[0-9]{4}(?:(?P=sep)[0-9]{4}){1,2}(?:(?P=sep)[0-9]{1,4})?"
    + r"|[0-9]{3}(?P<amex>[ \-])[0-9]{6}(?P=amex)[0-9]{5})"
    + _GROUP_RIGHT
)

_USCC_CHARACTER = "[0-9A-HJ-NPQRTUWXY]"
_USCC = re.compile(
    _USCC_CHARACTER + _LEFT + _USCC_CHARACTER + "[0-9]{6}" + _USCC_CHARACTER + "{10}" + _RIGHT
)

# The common subset of RFC 5322 addresses: dot-atoms of letters, digits and ._%+- before the
# @, DNS host names after it, ending in an alphabetic top-level domain.
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-](?<![A-Za-z0-9._%+\-].)[A-Za-z0-9._%+\-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9\-])"
)

_IPV4 = re.compile(
    r"[0-9](?<![0-9A-Za-z.].)[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}"
    r"(?![0-9A-Za-z]|\.[0-9])"
)
# Two to seven colon-terminated hex groups (empty groups allow "::"), then a last hex group
# or an embedded dotted IPv4 address. The ipaddress module decides what is valid.
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z.])(?<![0-9A-Fa-f]:)(?<!::)(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})"
    r"(?![0-9A-Za-z:]|\.[0-9])"
)

# PRC ordinary passports: E + 8 digits (electronic passports), E + a letter other than I or
# O + 7 digits (the series that followed), and G + 8 digits (the earlier series).
_PASSPORT = re.compile(
    r"[EG]" + _LEFT + r"(?:[0-9]{8}|(?<=[Ee])[A-HJ-NP-Z][0-9]{7})" + _RIGHT, re.IGNORECASE
)

_SEPARATORS = re.compile(r"[ \-]")


def fold_fullwidth(text: str) -> str:
    """Return ``text`` with full-width identifier characters folded to ASCII.

    Each character maps to exactly one character, so offsets into the result are offsets
    into ``text``.
    """
    if _FULLWIDTH.search(text) is None:
        return text
    return text.translate(_FULLWIDTH_TABLE)


@dataclass(frozen=True, slots=True)
class Detector:
    """Finder of one kind of personal data.

    ``validate`` receives the matched text and returns whether it is real. ``context``
    lists lower-case words, of which one must appear within CONTEXT_BEFORE characters
    before or CONTEXT_AFTER characters after the match. ``hint`` is a character that every
    match contains, so texts without it are skipped cheaply.
    """

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    context: tuple[str, ...] = ()
    hint: str | None = None

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """Yield the (start, end) offsets of every accepted match in folded ``text``."""
        if self.hint is not None and self.hint not in text:
            return
        for match in self.pattern.finditer(text):
            start, end = match.span()
            if start == end:
                continue
            if self.validate is not None and not self.validate(match.group()):
                continue
            if self.context and not _has_context(text, start, end, self.context):
                continue
            yield start, end


def _has_context(text: str, start: int, end: int, words: tuple[str, ...]) -> bool:
    window = text[max(0, start - CONTEXT_BEFORE):end + CONTEXT_AFTER].lower()
    return any(word in window for word in words)


def _valid_resident_id(value: str) -> bool:
    return is_valid_resident_id(value.upper())


def _valid_bank_card(value: str) -> bool:
    return is_valid_bank_card(_SEPARATORS.sub("", value))


def _valid_email(value: str) -> bool:
    local, _, domain = value.rpartition("@")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return len(domain) <= 253


def _valid_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _valid_ipv6(value: str) -> bool:
    # Without a decimal digit, "a::b" or "dead::beef" is more likely code than an address.
    if not any(character.isdigit() for character in value):
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def builtin_detectors(kinds: Iterable[Kind], passport_context: bool = True) -> list[Detector]:
    """Return the detectors of the enabled built-in kinds, highest priority first.

    On equal spans the earlier detector wins: an 18-digit number that is a valid resident ID
    is an ID even if it also passes the Luhn check or the credit-code check.
    """
    enabled = set(kinds)
    table: list[tuple[Kind, list[Detector]]] = [
        (Kind.ID_CARD, [Detector(Kind.ID_CARD.value, _RESIDENT_ID, _valid_resident_id)]),
        (Kind.USCC, [Detector(Kind.USCC.value, _USCC, is_valid_uscc)]),
        (Kind.BANK_CARD, [Detector(Kind.BANK_CARD.value, _BANK_CARD, _valid_bank_card)]),
        (Kind.PHONE, [Detector(Kind.PHONE.value, _PHONE)]),
        (Kind.EMAIL, [Detector(Kind.EMAIL.value, _EMAIL, _valid_email, hint="@")]),
        (Kind.IP_ADDRESS, [
            Detector(Kind.IP_ADDRESS.value, _IPV4, _valid_ipv4, hint="."),
            Detector(Kind.IP_ADDRESS.value, _IPV6, _valid_ipv6, hint=":"),
        ]),
        (Kind.PASSPORT, [Detector(Kind.PASSPORT.value, _PASSPORT,
                                  context=PASSPORT_CONTEXT if passport_context else ())]),
    ]
    return [detector for kind, detectors in table if kind in enabled for detector in detectors]


def custom_term_detector(kind: str, terms: Iterable[str]) -> Detector:
    """Return a detector of exact terms, matched case-insensitively.

    A term that starts or ends with an ASCII letter or digit must not continue a longer
    ASCII word, so "Falcon" is not found in "Falconry". Other terms, such as Chinese ones,
    match anywhere.
    """
    alternatives = []
    for term in sorted({term.strip() for term in terms}, key=len, reverse=True):
        left = r"(?<![0-9A-Za-z])" if term[0].isascii() and term[0].isalnum() else ""
        right = r"(?![0-9A-Za-z])" if term[-1].isascii() and term[-1].isalnum() else ""
        alternatives.append(left + re.escape(term) + right)
    return Detector(kind, re.compile("|".join(alternatives), re.IGNORECASE))


def custom_pattern_detector(kind: str, pattern: str) -> Detector:
    """Return a detector of a user-supplied regular expression, used as written."""
    return Detector(kind, re.compile(pattern))
