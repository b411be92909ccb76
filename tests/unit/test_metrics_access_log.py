"""The access log fields of a finished request, as the JSON log format writes them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from enclave.api.lifecycle import RequestRecord
from enclave.api.middleware import access_log_fields
from enclave.logs import JsonFormatter, RequestIdFilter


@dataclass
class Principal:
    user_id: str
    key_prefix: str | None


def generation_record() -> RequestRecord:
    record = RequestRecord(request_id="req-42", method="POST", route="/v1/chat/completions",
                           client="127.0.0.1")
    record.accepted = True
    record.model = "tiny-model"
    record.principal = Principal("alice", "3f9a1c0b7e21")
    record.input_text = "My account number is 12345678"
    record.prompt_tokens = 20
    record.cached_tokens = 8
    record.completion_tokens = 11
    record.queue_s = 0.0125
    record.first_token_at = record.started + 0.25
    record.last_token_at = record.first_token_at + 0.5
    record.finish_reason = "length"
    return record


def test_fields_of_generation_request() -> None:
    fields = access_log_fields(generation_record())

    assert fields == {
        "user_id": "alice", "key_prefix": "3f9a1c0b7e21", "model": "tiny-model",
        "stream": False, "prompt_tokens": 20, "cached_tokens": 8, "completion_tokens": 11,
        "queue_ms": 12.5, "ttft_ms": 250.0, "tokens_per_s": 20.0, "finish_reason": "length",
    }


def test_fields_of_request_without_model() -> None:
    record = RequestRecord(request_id="req-43", method="GET", route="/health", client=None)

    assert access_log_fields(record) == {}


def test_fields_carry_error_code() -> None:
    record = generation_record()
    record.first_token_at = record.last_token_at = None
    record.finish_reason = "error"
    record.error_code = "deadline_exceeded"

    fields = access_log_fields(record)

    assert fields["error_code"] == "deadline_exceeded"
    assert "ttft_ms" not in fields
    assert "tokens_per_s" not in fields


def test_json_line_has_fields_not_prompt() -> None:
    record = generation_record()
    log_record = logging.LogRecord("enclave.access", logging.INFO, __file__, 1,
                                   "POST %s %d", ("/v1/chat/completions", 200), None)
    for key, value in access_log_fields(record).items():
        setattr(log_record, key, value)
    log_record.request_id = record.request_id
    RequestIdFilter().filter(log_record)

    line = JsonFormatter().format(log_record)
    entry = json.loads(line)

    assert entry["request_id"] == "req-42"
    assert entry["user_id"] == "alice"
    assert entry["ttft_ms"] == 250.0
    assert entry["tokens_per_s"] == 20.0
    assert "12345678" not in line
