"""``enclave keys`` round trip: the secret is shown once, never listed, and stored hashed.

The commands run in process through typer's CliRunner; one test runs the real ``enclave``
command to check the error boundary (one line, exit status 2).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from enclave.cli.keys import app
from enclave.i18n import set_locale


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ENCLAVE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def keys(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_keys_round_trip(data_dir: Path) -> None:
    created = keys("create", "--user", "alice", "--name", "Alice", "--model", "SmolLM2-*",
                   "--rpm", "30", "--tpm", "5000")
    key = created.stdout.strip()
    secret = key.rsplit("-", 1)[1]
    prefix = "-".join(key.split("-")[:3])
    assert key.startswith("sk-enc-")
    assert "only time the key is shown" in created.stderr
    assert key not in created.stderr

    listed = keys("list")
    assert prefix in listed.stdout
    assert "alice" in listed.stdout
    assert "SmolLM2-*" in listed.stdout
    assert "active" in listed.stdout
    assert secret not in listed.stdout + listed.stderr

    store = data_dir / "access" / "keys.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert secret.encode() not in store.read_bytes()

    rotated = keys("rotate", prefix)
    new_key = rotated.stdout.strip()
    assert new_key.startswith("sk-enc-")
    assert new_key != key
    assert "is revoked" in rotated.stderr

    revoked = keys("revoke", new_key)
    assert "Revoked key" in revoked.stderr

    views = {view["prefix"]: view
             for view in map(json.loads, keys("list", "--json").stdout.splitlines())}
    assert views[prefix]["status"] == "revoked"
    assert views["-".join(new_key.split("-")[:3])]["status"] == "revoked"
    assert views[prefix]["models"] == ["SmolLM2-*"]
    assert all(set(view).isdisjoint({"key", "digest", "salt"}) for view in views.values())


def test_rotate_with_grace_keeps_old_key(data_dir: Path) -> None:
    key = keys("create", "--user", "alice").stdout.strip()
    rotated = keys("rotate", key, "--grace-minutes", "10")
    assert "stops working at" in rotated.stderr
    view = json.loads(keys("list", "--json").stdout.splitlines()[0])
    assert view["status"] == "active"
    assert view["expires_at"] is not None


def test_keys_messages_in_chinese(data_dir: Path) -> None:
    set_locale("zh_CN")
    try:
        created = keys("create", "--user", "alice")
        listed = keys("list")
    finally:
        set_locale(None)
    assert "密钥仅显示这一次" in created.stderr
    assert "用户" in listed.stdout
    assert "有效" in listed.stdout


def test_keys_error_is_one_line(data_dir: Path) -> None:
    environment = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    completed = subprocess.run(
        [sys.executable, "-m", "enclave", "keys", "revoke", "sk-enc-0123456789ab"],
        capture_output=True, text=True, env=environment, timeout=60)
    assert completed.returncode == 2
    assert completed.stderr.startswith("Error: No key with prefix")
    assert len(completed.stderr.strip().splitlines()) == 1


def test_keys_create_rejects_invalid_user(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["create", "--user", "bad user"])
    assert result.exit_code != 0
    assert "Invalid user id" in str(result.exception)
