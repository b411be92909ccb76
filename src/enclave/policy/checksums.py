"""Check characters and validity rules of the structured identifiers the detectors find.

Each ``is_valid_*`` function takes the identifier without separators and returns whether it
passes every rule, so a detector reports a number only when it could be real:

* Resident ID (GB 11643-1999): 17 digits and a check character computed with ISO 7064
  MOD 11-2, a province code in use, and a birth date that exists and is not in the future.
* Bank card (ISO/IEC 7812): 13 to 19 digits that pass the Luhn check and start with an
  issuer prefix of a payment network.
* Unified social credit code (GB 32100-2015): 18 characters from a 31-character alphabet,
  a registration-department code and an institution-category code in use, a numeric
  administrative division code, and a MOD 31 check character.

An 18-digit number with a resident ID's region and birth-century shape that fails the ID
rules is a mistyped ID, so it is reported neither as a bank card nor as a credit code even
when it passes their checks.
"""

from __future__ import annotations

from datetime import date

# Weights of ISO 7064 MOD 11-2 for the 17 leading digits: 2**(17 - position) mod 11.
_RESIDENT_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# Check character indexed by the weighted sum mod 11.
_RESIDENT_ID_CHECK = "10X98765432"

# First two digits of the address code (GB/T 2260 provinces), plus 81, 82 and 83: the
# residence permits of Hong Kong, Macao and Taiwan residents, whose address code is
# 810000, 820000 or 830000.
MAINLAND_PROVINCES = frozenset({
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65",
})
RESIDENCE_PERMIT_REGIONS = frozenset({"810000", "820000", "830000"})

# People born before this year are not expected to hold a second-generation card.
_EARLIEST_BIRTH_YEAR = 1900

# GB 32100-2015: the 31 characters a code may contain (no I, O, S, V or Z) and the weights
# 3**position mod 31 of the 17 leading characters.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES = {character: value for value, character in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# First character: registration department (1 staffing office, 2-8 foreign affairs, justice,
# culture, civil affairs, tourism, religion, trade unions, 9 market regulation, A military
# staffing office, N agriculture, Y others). Second character: institution category, which
# is 1-5 or 9 under every department; no category 0 exists, so date-prefixed numbers
# ("2024...") are not codes.
_USCC_DEPARTMENTS = frozenset("123456789ANY")
_USCC_CATEGORIES = frozenset("123459")


def resident_id_check_character(first17: str) -> str:
    """Return the check character (0-9 or X) of the 17 leading digits of a resident ID."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _RESIDENT_ID_WEIGHTS,
                                                                strict=True))
    return _RESIDENT_ID_CHECK[total % 11]


def resident_id_region_is_valid(address_code: str) -> bool:
    """Return whether a six-digit address code has the shape of a real one.

    Mainland codes start with a province code and name a prefecture or county below it, so
    the last four digits are not all zero. Residence-permit codes are exactly 810000,
    820000 or 830000.
    """
    if address_code in RESIDENCE_PERMIT_REGIONS:
        return True
    return address_code[:2] in MAINLAND_PROVINCES and address_code[2:] != "0000"


def birth_date(digits: str, today: date | None = None) -> date | None:
    """Return the YYYYMMDD date in ``digits``, or None if it does not exist or is too late."""
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None
    if born.year < _EARLIEST_BIRTH_YEAR or born > (today or date.today()):
        return None
    return born


def is_valid_resident_id(value: str, today: date | None = None) -> bool:
    """Return whether ``value`` is an 18-character resident ID that passes every rule."""
    if len(value) != 18 or not value[:17].isascii() or not value[:17].isdigit():
        return False
    if not resident_id_region_is_valid(value[:6]):
        return False
    if birth_date(value[6:14], today) is None:
        return False
    return resident_id_check_character(value[:17]) == value[17].upper()


def looks_like_resident_id(digits: str) -> bool:
    """Return whether 18 characters have a resident ID's region and birth-century shape.

    Used to keep mistyped resident IDs (wrong check digit, impossible date) from being
    reported as bank cards or credit codes when they happen to pass those checks.
    """
    return (
        len(digits) == 18
        and digits[:17].isdigit()
        and resident_id_region_is_valid(digits[:6])
        and digits[6:8] in ("19", "20")
    )


def luhn_is_valid(digits: str) -> bool:
    """Return whether a digit string passes the Luhn (mod 10) check."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = int(character)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def bank_card_prefix_is_valid(digits: str) -> bool:
    """Return whether a card number starts with an issuer prefix of a payment network.

    Accepted: 3 (American Express, JCB, Diners Club), 4 (Visa), 5 (Mastercard, Maestro),
    6 (UnionPay, Discover, Maestro) and 2221-2720 (Mastercard). Numbers starting with
    1, 7, 8, 9 or another 2 belong to other industries (ISO/IEC 7812 major industry
    identifier) or are date-prefixed order numbers.
    """
    if digits[0] in "3456":
        return True
    return digits[0] == "2" and 2221 <= int(digits[:4]) <= 2720


def is_valid_bank_card(digits: str) -> bool:
    """Return whether 13-19 digits form a plausible payment card number."""
    # NOTE: legacy domestic Chinese debit cards whose numbers start with 9 (before the
    # move to UnionPay 62 prefixes) are not accepted, because the prefix rule keeps
    # order numbers out.
    if not 13 <= len(digits) <= 19 or not digits.isascii() or not digits.isdigit():
        return False
    if looks_like_resident_id(digits):
        return False
    return bank_card_prefix_is_valid(digits) and luhn_is_valid(digits)


def uscc_check_character(first17: str) -> str:
    """Return the check character of the 17 leading characters of a credit code."""
    total = sum(_USCC_VALUES[character] * weight
                for character, weight in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(value: str) -> bool:
    """Return whether ``value`` is an 18-character unified social credit code."""
    if len(value) != 18 or any(character not in _USCC_VALUES for character in value):
        return False
    if value[0] not in _USCC_DEPARTMENTS or value[1] not in _USCC_CATEGORIES:
        return False
    if not value[2:8].isdigit() or looks_like_resident_id(value):
        return False
    return uscc_check_character(value[:17]) == value[17]
