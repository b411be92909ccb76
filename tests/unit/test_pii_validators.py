"""Check characters and validity rules, compared with independently computed values."""

from __future__ import annotations

import random
from datetime import date

import pytest

from enclave.policy.checksums import (
    USCC_ALPHABET,
    is_valid_bank_card,
    is_valid_resident_id,
    is_valid_uscc,
    luhn_is_valid,
    resident_id_check_character,
    uscc_check_character,
)

TODAY = date(2025, 6, 1)


def reference_resident_id_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 written from its definition: weights 2**(17 - i) mod 11."""
    total = sum(int(digit) * pow(2, 17 - index, 11) for index, digit in enumerate(first17))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def reference_uscc_check(first17: str) -> str:
    """GB 32100-2015 written from its definition: weights 3**i mod 31, check 31 - sum mod 31."""
    total = sum(USCC_ALPHABET.index(char) * pow(3, index, 31)
                for index, char in enumerate(first17))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def reference_luhn(digits: str) -> bool:
    doubled = [int(d) * (2 if index % 2 else 1) for index, d in enumerate(reversed(digits))]
    return sum(value // 10 + value % 10 for value in doubled) % 10 == 0


def test_resident_id_check_matches_standard_example() -> None:
    # The example number printed in GB 11643-1999.
    assert resident_id_check_character("11010519491231002") == "X"


def test_resident_id_check_matches_reference() -> None:
    generator = random.Random(7)
    for _ in range(2000):
        first17 = "".join(generator.choice("0123456789") for _ in range(17))
        assert resident_id_check_character(first17) == reference_resident_id_check(first17)


@pytest.mark.parametrize("value", [
    "11010519491231002X",
    "11010519491231002x",
    "440305" + "20000229" + "123" + reference_resident_id_check("44030520000229123"),
    "810000" + "19851130" + "456" + reference_resident_id_check("81000019851130456"),
])
def test_resident_id_valid(value: str) -> None:
    assert is_valid_resident_id(value, TODAY)


@pytest.mark.parametrize(("value", "reason"), [
    ("110105194912310021", "wrong check digit"),
    ("110105" + "19000229" + "123" + reference_resident_id_check("11010519000229123"),
     "1900 was not a leap year"),
    ("110105" + "19901332" + "123" + reference_resident_id_check("11010519901332123"),
     "month 13"),
    ("110105" + "20250602" + "123" + reference_resident_id_check("11010520250602123"),
     "born after today"),
    ("110105" + "18991231" + "123" + reference_resident_id_check("11010518991231123"),
     "born before 1900"),
    ("990105" + "19900101" + "123" + reference_resident_id_check("99010519900101123"),
     "no province 99"),
    ("110000" + "19900101" + "123" + reference_resident_id_check("11000019900101123"),
     "province code without a prefecture"),
    ("11010519491231002", "17 characters"),
    ("1101051949123100２X", "full-width digit"),
])
def test_resident_id_invalid(value: str, reason: str) -> None:
    assert not is_valid_resident_id(value, TODAY), reason


def test_uscc_check_matches_public_codes() -> None:
    # Published registration codes of Tencent (Shenzhen) and Huawei Technologies.
    assert is_valid_uscc("9144030071526726XG")
    assert is_valid_uscc("914403001922038216")


def test_uscc_check_matches_reference() -> None:
    generator = random.Random(11)
    for _ in range(2000):
        first17 = "".join(generator.choice(USCC_ALPHABET) for _ in range(17))
        assert uscc_check_character(first17) == reference_uscc_check(first17)


@pytest.mark.parametrize(("value", "reason"), [
    ("9144030071526726XA", "wrong check character"),
    ("9144030071526726X", "17 characters"),
    ("914403007152672OXG", "O is not in the alphabet"),
    ("91A4030071526726XG", "administrative division code has a letter"),
    ("9144030071526726xg", "lower case"),
])
def test_uscc_invalid(value: str, reason: str) -> None:
    assert not is_valid_uscc(value), reason


def with_uscc_check(first17: str) -> str:
    return first17 + reference_uscc_check(first17)


@pytest.mark.parametrize(("value", "reason"), [
    (with_uscc_check("20240727732482238"), "no institution category 0 (date-prefixed number)"),
    (with_uscc_check("B1440300715267260"), "B is not a registration department"),
    (with_uscc_check("11010119990431300"), "shaped like a mistyped resident ID"),
])
def test_uscc_structure_rejected_despite_check(value: str, reason: str) -> None:
    assert not is_valid_uscc(value), reason


def test_uscc_government_code_accepted() -> None:
    assert is_valid_uscc(with_uscc_check("11100000000013127"))


def test_luhn_matches_reference() -> None:
    generator = random.Random(3)
    for _ in range(2000):
        digits = "".join(generator.choice("0123456789") for _ in range(generator.randint(13, 19)))
        assert luhn_is_valid(digits) == reference_luhn(digits)


@pytest.mark.parametrize("digits", [
    "4111111111111111",     # Visa test number
    "5555555555554444",     # Mastercard test number
    "2223003122003222",     # Mastercard 2-series test number
    "378282246310005",      # American Express test number
    "6222021234567890128",  # UnionPay, 19 digits
])
def test_bank_card_valid(digits: str) -> None:
    assert reference_luhn(digits)
    assert is_valid_bank_card(digits)


@pytest.mark.parametrize(("digits", "reason"), [
    ("4111111111111112", "fails Luhn"),
    ("9558801234567890", "prefix 9 is not a payment network"),
    ("2024031512345678", "2024 is below the Mastercard 2221-2720 range"),
    ("411111111111", "12 digits"),
    ("41111111111111111113", "20 digits"),
])
def test_bank_card_invalid(digits: str, reason: str) -> None:
    assert not is_valid_bank_card(digits), reason


def test_bank_card_rejects_resident_id_shape() -> None:
    # A mistyped resident ID (wrong check digit) that happens to pass Luhn is not a card.
    mistyped = None
    for last_digit in "0123456789":
        first17 = "4403051990030712" + last_digit
        for check in "0123456789":
            candidate = first17 + check
            if check != reference_resident_id_check(first17) and reference_luhn(candidate):
                mistyped = candidate
    assert mistyped is not None
    assert not is_valid_resident_id(mistyped, TODAY)
    assert not is_valid_bank_card(mistyped)
