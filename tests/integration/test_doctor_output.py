"""``enclave doctor`` on temporary data directories: what it reports and its exit status."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from enclave.access import manage
from enclave.access.store import SqliteKeyStore
from enclave.models.embedded import default_chat_model

pytestmark = pytest.mark.slow

MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


def doctor(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ENCLAVE_DATA_DIR": str(tmp_path / "data"), "LANG": "C.UTF-8",
                   "LC_ALL": "C.UTF-8", **(env or {})}
    environment.pop("ENCLAVE_CONFIG", None)
    environment.pop("ENCLAVE_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "enclave", "doctor", *args],
                          capture_output=True, text=True, env=environment, timeout=120,
                          cwd=tmp_path)


def rows_by_check(output: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for line in output.splitlines():
        row = json.loads(line)
        rows.setdefault(row["check"], []).append(row)
    return rows


@pytest.fixture(scope="module")
def model_digest() -> str:
    return hashlib.sha256(default_chat_model().read_bytes()).hexdigest()


def test_doctor_on_fresh_data_dir(tmp_path: Path, model_digest: str) -> None:
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(f"{model_digest}  {default_chat_model().name}\n")

    completed = doctor(tmp_path, "--json", "--manifest", str(manifest),
                       "--probe", "192.0.2.1:80")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = rows_by_check(completed.stdout)
    assert rows["listening address"][0]["status"] == "pass"
    assert rows["API keys"][0]["status"] == "warn"
    assert "not required yet" in rows["API keys"][0]["detail"]
    assert rows["egress guard"][0]["status"] == "pass"
    assert rows["egress from this host"][0]["status"] == "pass"
    assert "blocked by the egress guard" in rows["egress from this host"][0]["detail"]
    assert rows["egress from the server"][0]["status"] == "warn"  # no admin key given
    assert rows["data directory permissions"][0]["status"] == "warn"
    assert rows["model checksum"][0]["status"] == "pass"
    assert model_digest in rows["model checksum"][0]["detail"]
    assert rows["privacy profile"][0]["status"] in ("pass", "warn")
    assert not (tmp_path / "data").exists()  # the doctor creates nothing


def test_doctor_fails_on_exposed_deployment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = SqliteKeyStore(data_dir / "access" / "keys.db")
    record = manage.create_key(store, manage.KeySpec(user_id="alice")).record
    manage.revoke_key(store, record.prefix)
    store.close()
    data_dir.chmod(0o755)
    (data_dir / "notes.txt").write_text("x")
    (data_dir / "notes.txt").chmod(0o644)
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(f"{'0' * 64}  {default_chat_model().name}\n")

    completed = doctor(tmp_path, "--manifest", str(manifest),
                       env={"ENCLAVE_SERVER__HOST": "0.0.0.0"})

    assert completed.returncode == 1, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]

    def row(check: str) -> str:
        return next(line for line in lines if line.startswith(check))

    assert "FAIL" in row("listening address")
    assert "no API key is active" in row("listening address")
    assert "FAIL" in row("API keys")
    assert "FAIL" in row("data directory permissions")
    assert "chmod 700" in row("data directory permissions")
    assert "PASS" in row("key store permissions")
    assert "FAIL" in row("files under the data directory")
    assert "notes.txt" in row("files under the data directory")
    assert "FAIL" in row("model checksum")
    assert "differs" in row("model checksum")
    assert lines[-1].endswith("failed")
    assert not lines[-1].endswith(" 0 failed")


def test_doctor_reports_unlisted_store_host(tmp_path: Path) -> None:
    completed = doctor(tmp_path, "--json",
                       env={"ENCLAVE_ACCESS__RATE_LIMIT_URL": "redis://10.0.0.7:6379/0"})
    rows = rows_by_check(completed.stdout)
    assert rows["egress guard"][0]["status"] == "fail"
    assert "10.0.0.7:6379" in rows["egress guard"][0]["detail"]
    # The guard blocks the doctor's own connection to the unlisted store as well.
    assert rows["rate-limit store"][0]["status"] == "fail"
    assert "egress guard" in rows["rate-limit store"][0]["detail"].lower()
    assert completed.returncode == 1


def test_server_without_probe_is_usage_error(tmp_path: Path) -> None:
    completed = doctor(tmp_path, "--server", "http://127.0.0.1:9")

    assert completed.returncode == 2
    # Click may wrap the message inside a box drawn with "│".
    words = " ".join(completed.stderr.replace("│", " ").split())
    assert "--server only matters with --probe" in words
