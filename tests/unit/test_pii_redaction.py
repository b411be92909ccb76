"""Placeholders, restoring, the streaming restorer and the privacy modes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from enclave.policy import (
    PlaceholderMap,
    PrivacyGuard,
    PrivacyMode,
    PrivacySettings,
    Redactor,
    StreamRestorer,
    restore,
)

TEXT = (
    "客户身份证11010519491231002X，手机13812345678，备用手机 +86 139-0000-1111，"
    "再次确认13812345678。Mail zhang@example.com or call 13812345678; "
    "card 4111 1111 1111 1111, server [2001:db8::1]."
)

SAMPLES = [
    TEXT,
    "",
    "nothing to see here",
    "[PHONE_1] typed by the user, then 13812345678",
    "邮箱a@example.com紧接着b@example.com",
    "１３８１２３４５６７８ 全角",
]


def test_redact_numbers_placeholders_per_kind() -> None:
    redaction = Redactor().redact(TEXT)
    assert redaction.text == (
        "客户身份证[ID_CARD_1]，手机[PHONE_1]，备用手机 [PHONE_2]，"
        "再次确认[PHONE_1]。Mail [EMAIL_1] or call [PHONE_1]; "
        "card [BANK_CARD_1], server [[IP_ADDRESS_1]]."
    )
    assert redaction.placeholders == {
        "[ID_CARD_1]": "11010519491231002X",
        "[PHONE_1]": "13812345678",
        "[PHONE_2]": "+86 139-0000-1111",
        "[EMAIL_1]": "zhang@example.com",
        "[BANK_CARD_1]": "4111 1111 1111 1111",
        "[IP_ADDRESS_1]": "2001:db8::1",
    }
    assert redaction.counts == {
        "ID_CARD": 1, "PHONE": 4, "EMAIL": 1, "BANK_CARD": 1, "IP_ADDRESS": 1,
    }


@pytest.mark.parametrize("text", SAMPLES)
def test_restore_round_trip(text: str) -> None:
    redaction = Redactor().redact(text)
    assert restore(redaction.text, redaction.placeholders) == text


def test_literal_placeholder_in_input_is_reserved() -> None:
    redaction = Redactor().redact("[PHONE_1] typed by the user, then 13812345678")
    assert redaction.text == "[PHONE_1] typed by the user, then [PHONE_2]"
    assert "[PHONE_1]" not in redaction.placeholders


def test_restore_keeps_unknown_and_altered_placeholders() -> None:
    placeholders = {"[PHONE_1]": "13812345678"}
    text = "[PHONE_1], [PHONE_2], [PHONE 1], PHONE_1, [[PHONE_1]]"
    assert restore(text, placeholders) == (
        "13812345678, [PHONE_2], [PHONE 1], PHONE_1, [13812345678]"
    )


def test_shared_map_across_calls() -> None:
    redactor, placeholders = Redactor(), PlaceholderMap()
    first = redactor.redact("手机13812345678", placeholders)
    second = redactor.redact("call 13900001111 or 13812345678", placeholders)
    assert first.text == "手机[PHONE_1]"
    assert second.text == "call [PHONE_2] or [PHONE_1]"
    assert second.counts == {"PHONE": 2}
    assert len(placeholders) == 2


def test_redact_messages_shares_map_and_keeps_input() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Operator phone 13900001111."},
        {"role": "user", "content": [
            {"type": "text", "text": "我的手机13812345678"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": "还是13812345678，邮箱a@example.com"},
    ]
    original = copy.deepcopy(messages)

    result = Redactor().redact_messages(messages)

    assert messages == original
    assert result.messages[0]["content"] == "Operator phone [PHONE_1]."
    assert result.messages[1]["content"][0] == {"type": "text", "text": "我的手机[PHONE_2]"}
    assert result.messages[1]["content"][1] == original[1]["content"][1]
    assert result.messages[2] == original[2]
    assert result.messages[3]["content"] == "还是[PHONE_2]，邮箱[EMAIL_1]"
    assert result.counts == {"PHONE": 3, "EMAIL": 1}
    assert result.placeholders["[PHONE_2]"] == "13812345678"


def stream(restorer: StreamRestorer, pieces: list[str]) -> str:
    released = [restorer.push(piece) for piece in pieces]
    released.append(restorer.finish())
    return "".join(released)


def test_stream_restorer_every_split_position() -> None:
    redaction = Redactor().redact(TEXT)
    answer = f"好的。{redaction.text} [note] [PHONE_9] [PHONE_"
    expected = restore(answer, redaction.placeholders)
    for cut in range(len(answer) + 1):
        restorer = StreamRestorer(redaction.placeholders)
        assert stream(restorer, [answer[:cut], answer[cut:]]) == expected, cut


def test_stream_restorer_every_pair_of_split_positions() -> None:
    placeholders = {"[PHONE_1]": "13812345678", "[PHONE_12]": "13900001111", "[ID_CARD_1]": "X"}
    answer = "a[PHONE_1][PHONE_12][[ID_CARD_1]b[PHONE_1"
    expected = restore(answer, placeholders)
    for first in range(len(answer) + 1):
        for second in range(first, len(answer) + 1):
            pieces = [answer[:first], answer[first:second], answer[second:]]
            assert stream(StreamRestorer(placeholders), pieces) == expected, (first, second)


def test_stream_restorer_one_character_at_a_time() -> None:
    redaction = Redactor().redact(TEXT)
    restorer = StreamRestorer(redaction.placeholders)
    released = [restorer.push(character) for character in redaction.text]
    assert "".join(released) + restorer.finish() == TEXT
    assert all("[PHONE" not in piece and "[ID_" not in piece for piece in released)


def test_stream_restorer_holds_back_partial_placeholder() -> None:
    restorer = StreamRestorer({"[ID_CARD_1]": "11010519491231002X"})
    assert restorer.push("身份证是[ID_CA") == "身份证是"
    assert restorer.push("RD_1]，") == "11010519491231002X，"
    assert restorer.push("[IDEA]") == "[IDEA]"
    assert restorer.push("[ID_") == ""
    assert restorer.finish() == "[ID_"


def test_stream_restorer_without_placeholders_passes_through() -> None:
    restorer = StreamRestorer({})
    assert restorer.push("[PHONE_") == "[PHONE_"
    assert restorer.finish() == ""


MESSAGES = [{"role": "user", "content": "我的手机13812345678，请回电"}]


def guard(mode: PrivacyMode, restore_output: bool = True) -> PrivacyGuard:
    return PrivacyGuard(PrivacySettings(mode=mode, restore_output=restore_output))


def test_mode_off_changes_nothing() -> None:
    protected = guard(PrivacyMode.OFF).protect_messages(MESSAGES)
    assert protected.model_input == MESSAGES
    assert protected.logged_input == MESSAGES
    assert protected.counts == {}
    assert protected.output_for_log("回电13812345678") == "回电13812345678"


def test_mode_detect_counts_only() -> None:
    protected = guard(PrivacyMode.DETECT).protect_messages(MESSAGES)
    assert protected.model_input == MESSAGES
    assert protected.logged_input == MESSAGES
    assert protected.counts == {"PHONE": 1}


def test_mode_redact_logs_keeps_model_input() -> None:
    protected = guard(PrivacyMode.REDACT_LOGS).protect_messages(MESSAGES)
    assert protected.model_input == MESSAGES
    assert protected.logged_input[0]["content"] == "我的手机[PHONE_1]，请回电"
    assert protected.counts == {"PHONE": 1}
    answer = "好的，我会拨打13812345678。"
    assert protected.output_for_caller(answer) == answer
    assert protected.output_for_log(answer) == "好的，我会拨打[PHONE_1]。"


def test_mode_redact_input_restores_answer() -> None:
    protected = guard(PrivacyMode.REDACT_INPUT).protect_messages(MESSAGES)
    assert protected.model_input[0]["content"] == "我的手机[PHONE_1]，请回电"
    answer = "好的，我会拨打[PHONE_1]，或者13900001111。"
    assert protected.output_for_caller(answer) == "好的，我会拨打13812345678，或者13900001111。"
    assert protected.output_for_log(answer) == "好的，我会拨打[PHONE_1]，或者[PHONE_2]。"
    restorer = protected.stream_restorer()
    assert stream(restorer, [answer[:9], answer[9:]]) == protected.output_for_caller(answer)


def test_mode_redact_input_without_restore() -> None:
    protected = guard(PrivacyMode.REDACT_INPUT, restore_output=False).protect_prompt(
        "手机13812345678")
    assert protected.model_input == "手机[PHONE_1]"
    assert protected.output_for_caller("拨打[PHONE_1]") == "拨打[PHONE_1]"
    assert stream(protected.stream_restorer(), ["拨打[PHO", "NE_1]"]) == "拨打[PHONE_1]"
