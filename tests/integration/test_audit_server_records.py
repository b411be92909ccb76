"""The audit trail of a real server: one record pair per request, and the check order.

The server requires keys (one exists) and serves a second model from ``models_dir``, the
embedded GGUF file under another name, which it loads only on first use.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave.access import manage
from enclave.access.store import SqliteKeyStore
from enclave.models.embedded import default_chat_model
from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

OTHER_MODEL = "other-model"
USER = [{"role": "user", "content": "Say hi to li.wei@example.com"}]
UNKNOWN_KEY = "sk-enc-0123456789ab-" + "a" * 43


@dataclass
class AuditedServer:
    server: ServerProcess
    keys: dict[str, str]
    data_dir: Path

    def post(self, path: str, key: str | None, request_id: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Request-Id": request_id}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.post(self.server.base_url + path, headers=headers, timeout=120, **kwargs)

    def records(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.data_dir / "audit" / "audit.db") as connection:
            rows = connection.execute("SELECT record FROM audit_records ORDER BY seq")
            return [json.loads(row[0]) for row in rows]

    def pairs(self, request_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Return {request id: {kind: record}} once each id has its close record."""
        deadline = time.monotonic() + 10
        while True:
            found: dict[str, dict[str, dict[str, Any]]] = {}
            for record in self.records():
                if record["request_id"] in request_ids:
                    kinds = found.setdefault(record["request_id"], {})
                    assert record["kind"] not in kinds, f"two {record['kind']} records: {record}"
                    kinds[record["kind"]] = record
            if all("close" in found.get(rid, {}) for rid in request_ids):
                return found
            assert time.monotonic() < deadline, f"close records missing: {found}"
            time.sleep(0.05)


def prefix(key: str) -> str:
    return key.split("-")[2]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedServer]:
    tmp_path = tmp_path_factory.mktemp("audit-records")
    data_dir = tmp_path / "data"
    store = SqliteKeyStore(data_dir / "access" / "keys.db")
    keys = {
        "admin": manage.create_key(store, manage.KeySpec(user_id="root", role="admin")).key,
        "alice": manage.create_key(store, manage.KeySpec(user_id="alice")).key,
        "bob": manage.create_key(store, manage.KeySpec(user_id="bob",
                                                       models=(DEFAULT_MODEL,))).key,
    }
    store.close()
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / f"{OTHER_MODEL}.gguf").symlink_to(default_chat_model())
    env = {"ENCLAVE_EMBEDDINGS__ENABLED": "false"}
    with running_server(tmp_path, "--parallel", "2", "--context-size", "512", "--models-dir",
                        str(models_dir), env=env) as server:
        yield AuditedServer(server, keys, data_dir)


def test_one_pair_per_request(audited: AuditedServer) -> None:
    alice = audited.keys["alice"]
    chat = {"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 5}
    responses = {
        "rec-chat": audited.post("/v1/chat/completions", alice, "rec-chat", json=chat),
        "rec-stream": audited.post("/v1/chat/completions", alice, "rec-stream",
                                   json={**chat, "stream": True,
                                         "stream_options": {"include_usage": True}}),
        "rec-ollama": audited.post("/api/chat", alice, "rec-ollama", json={
            "model": DEFAULT_MODEL, "messages": USER, "stream": False,
            "options": {"num_predict": 5}}),
    }
    for response in responses.values():
        assert response.status_code == 200, response.text
    usage = responses["rec-chat"].json()["usage"]
    stream_usage = [json.loads(line[6:]) for line in responses["rec-stream"].text.splitlines()
                    if line.startswith("data: {")][-1]["usage"]

    pairs = audited.pairs(list(responses))

    for request_id, pair in pairs.items():
        opened, closed = pair["open"], pair["close"]
        assert opened["user_id"] == "alice", request_id
        assert opened["key_prefix"] == prefix(alice)
        assert opened["model"] == DEFAULT_MODEL
        assert opened["client"] == "127.0.0.1"
        assert opened["query_excerpt"] == "Say hi to [EMAIL_1]"
        assert opened["pii"] == {"EMAIL": 1}
        assert opened["privacy_profile"] == "redact-logs"
        assert closed["status"] == 200, request_id
        assert closed["error_code"] is None
        assert closed["prompt_tokens"] > 0
        assert 0 < closed["completion_tokens"] <= 5
        assert closed["response_chars"] > 0
        assert closed["latency_ms"] > 0
        assert opened["seq"] < closed["seq"]
    assert pairs["rec-chat"]["open"]["route"] == "/v1/chat/completions"
    assert pairs["rec-ollama"]["open"]["route"] == "/api/chat"
    assert pairs["rec-chat"]["close"]["completion_tokens"] == usage["completion_tokens"]
    assert pairs["rec-stream"]["close"]["prompt_tokens"] == stream_usage["prompt_tokens"]


def test_rejections_recorded(audited: AuditedServer) -> None:
    chat = {"model": OTHER_MODEL, "messages": USER, "max_tokens": 5}
    statuses = {
        "rej-no-key": audited.post("/v1/chat/completions", None, "rej-no-key", json=chat),
        "rej-bad-key": audited.post("/v1/chat/completions", UNKNOWN_KEY, "rej-bad-key",
                                    json=chat),
        "rej-scope": audited.post("/v1/chat/completions", audited.keys["bob"], "rej-scope",
                                  json=chat),
        "rej-admin": audited.post("/admin/keys", audited.keys["bob"], "rej-admin",
                                  json={"user_id": "mallory"}),
    }
    invalid = audited.post("/v1/chat/completions", audited.keys["alice"], "rej-invalid",
                           json={"model": DEFAULT_MODEL, "messages": []})

    assert {rid: response.status_code for rid, response in statuses.items()} == {
        "rej-no-key": 401, "rej-bad-key": 401, "rej-scope": 403, "rej-admin": 403}
    assert invalid.status_code == 400
    pairs = audited.pairs(list(statuses))
    closes = {rid: (pair["close"]["status"], pair["close"]["error_code"])
              for rid, pair in pairs.items()}
    assert closes == {"rej-no-key": (401, "missing_api_key"),
                      "rej-bad-key": (401, "invalid_api_key"),
                      "rej-scope": (403, "model_not_allowed"),
                      "rej-admin": (403, "admin_required")}
    assert (pairs["rej-no-key"]["open"]["user_id"], pairs["rej-no-key"]["open"]["key_prefix"]) \
        == ("", None)
    assert pairs["rej-bad-key"]["open"]["key_prefix"] == "0123456789ab"
    assert pairs["rej-scope"]["open"]["user_id"] == "bob"
    assert pairs["rej-scope"]["open"]["model"] == OTHER_MODEL
    # A malformed body never reached accept(), so it has no record.
    assert not [r for r in audited.records() if r["request_id"] == "rej-invalid"]


def test_scope_checked_before_load(audited: AuditedServer) -> None:
    bob = audited.keys["bob"]
    attempts = [
        ("/v1/chat/completions", {"model": OTHER_MODEL, "messages": USER}),
        ("/v1/completions", {"model": OTHER_MODEL, "prompt": "Hi"}),
        ("/api/chat", {"model": OTHER_MODEL}),  # an empty chat only loads the model
        ("/api/generate", {"model": f"{OTHER_MODEL}:latest", "prompt": "Hi"}),
    ]
    for index, (path, body) in enumerate(attempts):
        response = audited.post(path, bob, f"scope-{index}", json=body)
        assert response.status_code == 403, (path, response.text)
    running = httpx.get(audited.server.base_url + "/api/ps", timeout=30,
                        headers={"Authorization": f"Bearer {audited.keys['admin']}"}).json()
    assert [model["name"] for model in running["models"]] == [DEFAULT_MODEL]
    assert f"Loaded model {OTHER_MODEL}" not in audited.server.log()

    # The same request with a key that may use the model loads it.
    allowed = audited.post("/api/chat", audited.keys["alice"], "scope-allowed",
                           json={"model": OTHER_MODEL})
    assert allowed.status_code == 200
    assert f"Loaded model {OTHER_MODEL}" in audited.server.log()


def test_metrics_report_audit_and_privacy(audited: AuditedServer) -> None:
    text = httpx.get(audited.server.base_url + "/metrics", timeout=30).text

    written = [line for line in text.splitlines()
               if line.startswith("enclave_audit_records_written_total ")]
    assert written and float(written[0].split()[1]) > 0
    assert "enclave_privacy_requests_with_findings_total" in text
    assert "enclave_privacy_input_email_total" in text


def test_chain_verifies(audited: AuditedServer, tmp_path: Path) -> None:
    env = {**os.environ, "ENCLAVE_DATA_DIR": str(audited.data_dir)}
    env.pop("ENCLAVE_CONFIG", None)
    result = subprocess.run([sys.executable, "-m", "enclave", "audit", "verify"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Chain intact" in result.stdout
