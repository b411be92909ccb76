"""redact-logs mode (the default) on a real server: no raw personal data is stored.

Requests carrying a resident ID number, mobile numbers, e-mail addresses and bank cards go
through every generation route, streamed and not, and one invalid request quotes a phone
number back in its error message. Afterwards no raw value may appear in any file of the
SQLite audit store (database and write-ahead log), in the JSONL export, or in the server
log written at debug level. The audit excerpts must show the placeholders instead.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

ID_NUMBER = "11010519491231002X"
PHONE = "13812345678"
OTHER_PHONE = "+86 139-0013-8000"
EMAIL = "li.wei@example.com"
OTHER_EMAIL = "wang_fang+bank@corp.example.cn"
CARD = "4111 1111 1111 1111"
RAW_VALUES = (ID_NUMBER, PHONE, "13900138000", "139-0013-8000", EMAIL, OTHER_EMAIL, CARD,
              "4111111111111111")
QUERY = f"手机{PHONE}，邮箱{EMAIL}，身份证{ID_NUMBER}，卡号{CARD}。请确认。"
SYSTEM = f"Account manager: {OTHER_PHONE}, {OTHER_EMAIL}."
QUERY_COUNTS = {"PHONE": 1, "EMAIL": 1, "ID_CARD": 1, "BANK_CARD": 1}
CHAT_COUNTS = {"PHONE": 2, "EMAIL": 2, "ID_CARD": 1, "BANK_CARD": 1}


@dataclass
class Sent:
    server: ServerProcess
    request_ids: list[str]


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": QUERY}], **fields}


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    """A default-settings server that has served one request per generation route."""
    tmp_path = tmp_path_factory.mktemp("privacy-logs")
    env = {"ENCLAVE_EMBEDDINGS__ENABLED": "false"}
    with running_server(tmp_path, "--parallel", "2", "--context-size", "1024",
                        env=env) as server:
        requests: dict[str, tuple[str, dict[str, Any]]] = {
            "pii-chat": ("/v1/chat/completions", chat_body()),
            "pii-stream": ("/v1/chat/completions", chat_body(stream=True)),
            "pii-completion": ("/v1/completions", {
                "model": DEFAULT_MODEL, "prompt": QUERY, "max_tokens": 6}),
            "pii-ollama-chat": ("/api/chat", {
                "model": DEFAULT_MODEL, "messages": chat_body()["messages"],
                "options": {"num_predict": 6}}),
            "pii-ollama-generate": ("/api/generate", {
                "model": DEFAULT_MODEL, "system": SYSTEM, "prompt": QUERY, "stream": False,
                "options": {"num_predict": 6}}),
        }
        for request_id, (path, body) in requests.items():
            response = server.post(path, json=body, headers={"X-Request-Id": request_id})
            assert response.status_code == 200, response.text

        invalid = server.post("/v1/chat/completions", json=chat_body(stop=int(PHONE)),
                              headers={"X-Request-Id": "pii-invalid"})
        assert invalid.status_code == 400
        assert PHONE in invalid.text  # the caller may see its own value quoted back
        wait_for_closes(server, list(requests))
        yield Sent(server, list(requests))


def audit_db(server: ServerProcess) -> Path:
    return server.log_path.parent / "data" / "audit" / "audit.db"


def records(server: ServerProcess) -> list[dict[str, Any]]:
    with sqlite3.connect(audit_db(server)) as connection:
        rows = connection.execute("SELECT record FROM audit_records ORDER BY seq").fetchall()
    return [json.loads(row[0]) for row in rows]


def wait_for_closes(server: ServerProcess, request_ids: list[str]) -> None:
    """Wait until every request has its close record, written after the last byte."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        closed = {record["request_id"] for record in records(server) if record["kind"] == "close"}
        if closed >= set(request_ids):
            return
        time.sleep(0.05)
    raise AssertionError(f"close records missing for {set(request_ids) - closed}")


def test_audit_store_has_no_raw_values(sent: Sent) -> None:
    files = {path.name: path.read_bytes()
             for path in audit_db(sent.server).parent.iterdir() if path.is_file()}

    assert "audit.db" in files
    for value in RAW_VALUES:
        leaks = [name for name, content in files.items() if value.encode() in content]
        assert leaks == [], value


def test_export_has_no_raw_values(sent: Sent, tmp_path: Path) -> None:
    env = {**os.environ, "ENCLAVE_DATA_DIR": str(audit_db(sent.server).parents[1])}
    env.pop("ENCLAVE_CONFIG", None)
    output = tmp_path / "audit.jsonl"
    exported = subprocess.run(
        [sys.executable, "-m", "enclave", "audit", "export", "--format", "jsonl", "-o",
         str(output)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert exported.returncode == 0, exported.stderr
    text = output.read_text(encoding="utf-8")
    assert "[PHONE_1]" in text
    for value in RAW_VALUES:
        assert value not in text, value


def test_server_log_has_no_raw_values(sent: Sent) -> None:
    log = sent.server.log()

    assert "DEBUG" in log
    assert "request_id=pii-stream" in log
    assert "request_id=pii-invalid" in log
    for value in RAW_VALUES:
        assert value not in log, value


def test_excerpts_show_placeholders(sent: Sent) -> None:
    opened = {record["request_id"]: record for record in records(sent.server)
              if record["kind"] == "open"}

    assert sorted(opened) == sorted(sent.request_ids)
    for request_id in sent.request_ids:
        record = opened[request_id]
        # Numbered in order of appearance, so the system message's values come first.
        assert re.match(r"手机\[PHONE_[12]\]，邮箱\[EMAIL_[12]\]，身份证\[ID_CARD_1\]",
                        record["query_excerpt"]), record["query_excerpt"]
        # The completion prompt is the query alone; the chats also carry the system message.
        expected = QUERY_COUNTS if request_id == "pii-completion" else CHAT_COUNTS
        assert record["pii"] == expected, request_id
        assert record["privacy_profile"] == "redact-logs"


def test_response_findings_are_counted(sent: Sent) -> None:
    # A schema with a constant forces the model to write a phone number into its answer.
    schema = {"type": "object", "properties": {"phone": {"const": PHONE}},
              "required": ["phone"]}
    response = sent.server.post("/v1/chat/completions", headers={"X-Request-Id": "pii-answer"},
                                json={**chat_body(max_tokens=40), "response_format": {
                                    "type": "json_schema",
                                    "json_schema": {"name": "contact", "schema": schema}}})
    assert response.status_code == 200, response.text
    assert PHONE in response.json()["choices"][0]["message"]["content"]
    wait_for_closes(sent.server, ["pii-answer"])

    closed = [record for record in records(sent.server)
              if record["kind"] == "close" and record["request_id"] == "pii-answer"]
    assert closed[0]["pii"] == {"PHONE": 1}
    metrics = sent.server.get("/metrics").text
    assert re.search(r"^enclave_privacy_output_phone_total [1-9]", metrics, re.MULTILINE)
