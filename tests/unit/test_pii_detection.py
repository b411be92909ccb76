"""Detectors on real sentences: boundaries, Chinese text, full-width digits, overlaps, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.config import load_settings
from enclave.errors import ConfigError
from enclave.policy import Kind, PrivacySettings, Redactor
from enclave.policy.checksums import luhn_is_valid, resident_id_check_character

ID = "11010519491231002X"
PHONE = "13812345678"
CARD = "4111111111111111"
USCC = "9144030071526726XG"


def found(text: str, redactor: Redactor | None = None) -> list[tuple[str, str]]:
    return [(item.kind, item.value) for item in (redactor or Redactor()).scan(text)]


@pytest.mark.parametrize(("text", "expected"), [
    (f"身份证号{ID}，请核实", [("ID_CARD", ID)]),
    (f"手机{PHONE}联系", [("PHONE", PHONE)]),
    (f"卡号{CARD}已绑定", [("BANK_CARD", CARD)]),
    (f"信用代码{USCC}。", [("USCC", USCC)]),
    ("邮箱zhang.san@example.com.cn。", [("EMAIL", "zhang.san@example.com.cn")]),
    ("服务器10.0.0.12无法访问", [("IP_ADDRESS", "10.0.0.12")]),
    ("护照号码E12345678，有效期", [("PASSPORT", "E12345678")]),
])
def test_detection_next_to_chinese_characters(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    (f"1{ID}", "digit before"),
    (f"{ID}5", "digit after"),
    (f"流水号9{ID}08", "inside a longer digit string"),
    (f"0.{ID}", "decimal fraction"),
    (f"{USCC}-01", "dashed code"),
    (f"SO{PHONE}", "letters before"),
    (f"{PHONE}0", "12 digits"),
    (f"3.{PHONE}", "decimal fraction"),
    (f"{PHONE}.5", "decimal number"),
    (f"2024-{CARD}", "dashed code"),
    (f"4111 {CARD}", "longer grouped number"),
    ("4111 1111 1111 1111 1111 1111", "six groups of four"),
    ("192.168.1.1.5", "five dotted parts"),
    ("5.192.168.1.1", "five dotted parts, leading extra"),
    ("护照 XE12345678", "passport inside a longer code"),
    ("v10.0.0.1", "letter before"),
])
def test_partial_numbers_not_reported(text: str, reason: str) -> None:
    assert found(text) == [], reason


@pytest.mark.parametrize("text", [
    "+8613812345678", "+86 13812345678", "+86-138-1234-5678", "0086 138 1234 5678",
    "138 1234 5678", "138-1234-5678",
])
def test_phone_groupings_cover_whole_number(text: str) -> None:
    assert found(f"电话{text}。") == [("PHONE", text)]


def test_phone_mixed_separators_not_grouped() -> None:
    assert found("138 1234-5678") == []


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "6222 0212 3456 7890 128",
    "3782 822463 10005",
])
def test_bank_card_groupings(text: str) -> None:
    assert found(f"卡号：{text}。") == [("BANK_CARD", text)]


def test_fullwidth_digits_detected_with_original_value() -> None:
    phone, email = "１３８１２３４５６７８", "ｚｈａｎｇ＠ｅｘａｍｐｌｅ．ｃｏｍ"
    assert found(f"手机{phone}，邮箱{email}") == [("PHONE", phone), ("EMAIL", email)]


def test_email_wins_over_phone_in_local_part() -> None:
    assert found(f"邮箱{PHONE}@qq.com") == [("EMAIL", f"{PHONE}@qq.com")]


def test_resident_id_wins_over_luhn_valid_card() -> None:
    # Find a valid resident ID that is also Luhn-valid and has a card prefix (4).
    for sequence in range(1000):
        first17 = f"41010219880101{sequence:03d}"
        candidate = first17 + resident_id_check_character(first17)
        if candidate[-1] != "X" and luhn_is_valid(candidate):
            break
    else:
        pytest.fail("no Luhn-valid resident ID in the range")
    assert found(f"号码{candidate}") == [("ID_CARD", candidate)]


def test_invalid_resident_id_not_reported() -> None:
    assert found("身份证110105194912310021") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("地址fe80::1ff:fe23:4567:890a。", "fe80::1ff:fe23:4567:890a"),
    ("mapped ::ffff:192.0.2.1 here", "::ffff:192.0.2.1"),
    ("loopback ::1.", "::1"),
    ("登录IP：fe80::fb13", "fe80::fb13"),
    ("ip:2001:DB8::8A2E", "2001:DB8::8A2E"),
])
def test_ipv6_forms(text: str, expected: str) -> None:
    assert found(text) == [("IP_ADDRESS", expected)]


@pytest.mark.parametrize("text", [
    "at 12:30:45", "std::vector", "a::b", "MAC 00:1A:2B:3C:4D:5E", "256.1.1.1",
    "192.168.01.1", "user@localhost", "name@@example.com", ".a@example.com",
])
def test_address_like_text_not_reported(text: str) -> None:
    assert found(text) == []


def test_passport_needs_context_word_by_default() -> None:
    assert found("型号 E12345678 已停产") == []
    assert found("Passport No. EA1234567") == [("PASSPORT", "EA1234567")]
    assert found("持 G12345678 号护照") == [("PASSPORT", "G12345678")]


def test_passport_without_context_when_disabled() -> None:
    redactor = Redactor(PrivacySettings(passport_context=False))
    assert found("型号 E12345678 已停产", redactor) == [("PASSPORT", "E12345678")]


def test_disabled_kinds_not_reported() -> None:
    redactor = Redactor(PrivacySettings(kinds=[Kind.EMAIL]))
    assert found(f"手机{PHONE}，邮箱a@example.com", redactor) == [("EMAIL", "a@example.com")]


def test_custom_terms_and_patterns() -> None:
    redactor = Redactor(PrivacySettings(
        custom_terms={"PROJECT": ["Falcon", "猎鹰计划"]},
        custom_patterns={"EMPLOYEE_ID": ["EMP-[0-9]{6}"]},
    ))
    text = "project falcon（猎鹰计划）由EMP-004211负责, not Falconry"
    assert found(text, redactor) == [
        ("PROJECT", "falcon"), ("PROJECT", "猎鹰计划"), ("EMPLOYEE_ID", "EMP-004211"),
    ]


def write_config(folder: Path, body: str) -> Path:
    path = folder / "enclave.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_settings_invalid_regex_names_pattern(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[privacy.custom_patterns]\nCASE_NO = ["CASE-([0-9]+"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "CASE-([0-9]+" in message
    assert "does not compile" in message
    assert "privacy.custom_patterns" in message


@pytest.mark.parametrize(("body", "expected"), [
    ('[privacy.custom_patterns]\nANY = ["x*"]\n', "matches the empty string"),
    ('[privacy.custom_terms]\nproject = ["Falcon"]\n', "kind name 'project' is invalid"),
    ('[privacy.custom_terms]\nPHONE = ["110"]\n', "is a built-in kind"),
    ('[privacy.custom_terms]\nPROJECT = [""]\n', "no empty ones"),
    ('[privacy]\nkinds = ["SSN"]\n', "privacy.kinds"),
    ('[privacy]\nmode = "redact"\n', "privacy.mode"),
])
def test_settings_rejected(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(write_config(tmp_path, body))


def test_settings_defaults_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENCLAVE_CONFIG", raising=False)
    assert load_settings().privacy.mode == "redact-logs"
    assert load_settings().privacy.kinds == list(Kind)
    monkeypatch.setenv("ENCLAVE_PRIVACY__MODE", "redact-input")
    assert load_settings().privacy.mode == "redact-input"
