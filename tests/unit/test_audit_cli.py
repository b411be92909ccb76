"""``enclave audit`` commands on a temporary store."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from enclave.audit import AuditSettings, AuditTrail, Principal, RequestClosed, RequestOpened
from enclave.audit.signing import public_key_pem
from enclave.cli.main import app
from enclave.i18n import set_locale

RUNNER = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with six requests: alice and bob, two models, one interrupted."""
    for name in list(os.environ):
        if name.startswith("ENCLAVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with AuditTrail(AuditSettings(checkpoint_interval=4), tmp_path) as trail:
        for index in range(6):
            user = "alice" if index % 2 == 0 else "bob"
            model = "smollm2" if index < 4 else "qwen"
            trail.open_request(RequestOpened(
                f"req-{index}", Principal(user, "sk-ab12"), "/v1/chat/completions", model,
                f"question number {index}, about invoices", client="10.0.0.7"))
            if index == 5:
                continue  # never closed: interrupted
            status, code = (429, "queue_full") if index == 3 else (200, None)
            trail.complete_request(RequestClosed(f"req-{index}", status, error_code=code,
                                                 response_chars=10, prompt_tokens=7,
                                                 completion_tokens=3, latency_ms=20.0))
    return tmp_path


def invoke(*args: str) -> Result:
    return RUNNER.invoke(app, ["audit", *args])


def tamper(data_dir: Path, sql: str) -> None:
    with sqlite3.connect(data_dir / "audit" / "audit.db") as connection:
        connection.execute(sql)


def test_verify_intact_chain(data_dir: Path) -> None:
    result = invoke("verify")

    assert result.exit_code == 0, result.output
    assert "Chain intact: 11 records" in result.output


def test_verify_names_broken_seq(data_dir: Path) -> None:
    tamper(data_dir, "UPDATE audit_records SET record = replace(record, 'invoices', "
                     "'receipts') WHERE seq = 3")

    result = invoke("verify")

    assert result.exit_code == 1
    assert "Chain broken. Problems found: 1," in result.output
    assert "seq 3  edited: the record does not match its hash" in result.output


def test_verify_json_report(data_dir: Path) -> None:
    tamper(data_dir, "DELETE FROM audit_records WHERE seq = 6")

    result = invoke("verify", "--json")

    report = json.loads(result.output)
    assert result.exit_code == 1
    assert report["ok"] is False
    assert report["breaks"] == [{"kind": "deleted", "first_seq": 6, "last_seq": 6,
                                 "detail": "these sequence numbers are missing"}]


def test_verify_since_checkpoint_skips_older_records(data_dir: Path) -> None:
    result = invoke("verify", "--since-checkpoint", "--json")

    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["start"] == "checkpoint"
    assert report["start_seq"] > 0
    assert report["records_checked"] == 11 - report["start_seq"]


def test_export_jsonl_verifies_with_public_key_only(data_dir: Path) -> None:
    key_file = data_dir / "public.pem"
    key_file.write_text(invoke("export-key").output)
    exported = data_dir / "export.jsonl"
    assert invoke("export", "--format", "jsonl", "--output", str(exported)).exit_code == 0
    (data_dir / "audit" / "signing-key.pem").unlink()  # the verifier has no private key

    result = invoke("verify", "--export", str(exported), "--public-key", str(key_file))

    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["type"] for line in lines].count("record") == 11
    assert lines[-1]["type"] == "head"
    assert result.exit_code == 0, result.output
    assert "Chain intact: 11 records" in result.output


def test_edited_export_fails_verification(data_dir: Path) -> None:
    key_file = data_dir / "public.pem"
    key_file.write_text(invoke("export-key").output)
    exported = data_dir / "export.jsonl"
    invoke("export", "--output", str(exported))
    exported.write_text(exported.read_text().replace('"status": 429', '"status": 200'))

    result = invoke("verify", "--export", str(exported), "--public-key", str(key_file))

    assert result.exit_code == 1
    assert "edited: the record does not match its hash" in result.output


def test_export_csv_one_row_per_record(data_dir: Path) -> None:
    result = invoke("export", "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0
    assert len(rows) == 11
    assert rows[0]["kind"] == "open"
    assert rows[0]["query_excerpt"] == "question number 0, about invoices"
    assert rows[0]["prev_hash"] == "0" * 64
    assert {row["error_code"] for row in rows if row["kind"] == "close"} == {"", "queue_full"}
    assert "Exported 11 records." in result.stderr


def test_export_time_range(data_dir: Path) -> None:
    result = invoke("export", "--since", "2999-01-01")

    assert result.exit_code == 0
    assert "Exported 0 records." in result.stderr


@pytest.mark.parametrize(("options", "expected"), [
    (["--user", "bob"], ["req-1", "req-3", "req-5"]),
    (["--model", "qwen"], ["req-4", "req-5"]),
    (["--status", "interrupted"], ["req-5"]),
    (["--status", "429"], ["req-3"]),
    (["--status", "queue_full"], ["req-3"]),
    (["--user", "alice", "--status", "200"], ["req-0", "req-2", "req-4"]),
    (["--until", "2000-01-01"], []),
    (["--since", "2000-01-01", "--limit", "2"], ["req-0", "req-1"]),
])
def test_search_filters(data_dir: Path, options: list[str], expected: list[str]) -> None:
    result = invoke("search", "--format", "jsonl", *options)

    found = [json.loads(line)["request_id"] for line in result.stdout.splitlines()]
    assert result.exit_code == 0, result.output
    assert found == expected


def test_search_table_shows_outcome(data_dir: Path) -> None:
    result = invoke("search", "--model", "qwen")

    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["TIME", "REQUEST", "USER"]
    assert "req-5" in lines[2]
    assert "interrupted" in lines[2]


def test_search_rejects_invalid_time(data_dir: Path) -> None:
    result = invoke("search", "--since", "yesterday")

    assert result.exit_code == 2
    assert "'yesterday' is not an ISO 8601 date or time" in result.output


def test_search_rejects_invalid_status(data_dir: Path) -> None:
    result = invoke("search", "--status", "999x")

    assert result.exit_code == 2
    assert "'999x' is neither an HTTP status" in result.output


def test_search_accepts_status_forms(data_dir: Path) -> None:
    for status in ("200", "queue_full", "interrupted"):
        result = invoke("search", "--format", "jsonl", "--status", status)
        assert result.exit_code == 0, result.output
        assert result.output.strip(), status


def test_purge_nothing_expired(data_dir: Path) -> None:
    result = invoke("purge", "--yes")

    assert result.exit_code == 0
    assert "Nothing to purge" in result.output


def test_purge_with_clock_ahead(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forty_years_us = 40 * 365 * 86_400 * 1_000_000
    monkeypatch.setattr("enclave.cli.audit.now_us",
                        lambda: forty_years_us + 1_700_000_000 * 1_000_000)

    dry = invoke("purge", "--dry-run")
    result = invoke("purge", "--yes")
    after = invoke("verify", "--json")

    assert "older than the retention of 36 months" in dry.output
    assert result.exit_code == 0, result.output
    assert "Removed 11 records" in result.output
    assert json.loads(after.output)["start"] == "purge anchor"


def test_ropa_markdown_and_json(data_dir: Path) -> None:
    (data_dir / "enclave.toml").write_text(
        '[audit]\ncontroller = "Example Bank AG, dpo@example.com"\ndigest_only = true\n'
        "retention_months = 120\n")

    markdown = invoke("ropa")
    data = json.loads(invoke("ropa", "--json").output)

    assert markdown.output.startswith("# Record of processing activities (GDPR Art. 30)")
    assert "Example Bank AG, dpo@example.com" in markdown.output
    assert data["retention"].startswith("120 months")
    assert data["recipients"] == ["None: all processing is local"]
    assert any("SHA-256 digest of the query text" in item for item in data["data_categories"])
    assert any("0600" in item for item in data["security_measures"])


def test_ropa_in_chinese(data_dir: Path) -> None:
    set_locale("zh-CN")
    try:
        result = invoke("ropa")
    finally:
        set_locale(None)

    assert result.output.startswith("# 处理活动记录（GDPR 第 30 条）")


def test_init_creates_store_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    result = invoke("init")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "audit" / "audit.db").exists()
    assert "key id" in result.output
    assert invoke("export-key").output.startswith("-----BEGIN PUBLIC KEY-----")


def test_missing_store_exits_with_status_2(tmp_path: Path) -> None:
    key_file = tmp_path / "public.pem"
    key_file.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENCLAVE_")}
    env.update(ENCLAVE_DATA_DIR=str(tmp_path), LANG="C.UTF-8", LC_ALL="C.UTF-8")

    result = subprocess.run([sys.executable, "-m", "enclave", "audit", "verify",
                             "--public-key", str(key_file)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: No audit store at {tmp_path}/audit/audit.db.")


def test_chinese_catalogue_covers_messages() -> None:
    # Messages live in audit.json; --help texts of every command live in cli.json.
    folder = Path(__file__).parents[2] / "src" / "enclave" / "i18n" / "locales" / "zh_CN"
    catalogue = {
        **json.loads((folder / "audit.json").read_text(encoding="utf-8")),
        **json.loads((folder / "cli.json").read_text(encoding="utf-8")),
    }
    sources = [Path(__file__).parents[2] / "src" / "enclave" / path for path in (
        "cli/audit.py", "audit/ropa.py", "audit/verify.py")]

    missing = [message for path in sources for message in translatable_messages(path)
               if message not in catalogue]

    assert missing == []


def translatable_messages(path: Path) -> list[str]:
    """Return the literal message ids passed to _(), translate() or a verify break."""
    positions = {"_": 0, "translate": 0, "add": 3, "Break": 3}
    messages = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        index = positions.get(str(name))
        if index is None or len(node.args) <= index:
            continue
        argument = node.args[index]
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            messages.append(argument.value)
    return messages
