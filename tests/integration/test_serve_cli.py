"""``enclave serve`` start-up: settings validation, model selection and the models folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import DEFAULT_MODEL, running_server

pytestmark = pytest.mark.slow


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HOME": str(tmp_path), **(env or {})}
    environment.pop("ENCLAVE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "enclave", "serve", "--port", "0", *args],
                          capture_output=True, text=True, env=environment, cwd=tmp_path,
                          timeout=60)


def test_missing_model_file_is_reported(tmp_path: Path) -> None:
    result = serve(tmp_path, "--model", str(tmp_path / "absent.gguf"))
    assert result.returncode == 2
    assert "absent.gguf" in result.stderr
    assert "Traceback" not in result.stderr


def test_file_that_is_not_gguf_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    result = serve(tmp_path, "--model", str(fake))
    assert result.returncode == 2
    assert "not a GGUF file" in result.stderr


def test_invalid_environment_value_names_setting(tmp_path: Path) -> None:
    result = serve(tmp_path, env={"ENCLAVE_ENGINE__PARALLEL": "0"})
    assert result.returncode == 2
    assert "engine.parallel" in result.stderr
    assert "ENCLAVE_ENGINE__PARALLEL" in result.stderr


def test_unknown_key_in_settings_file_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text("[engine]\nparalel = 4\n")
    result = serve(tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert "engine.paralel" in result.stderr
    assert "unknown setting" in result.stderr


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text("[engine\n")
    result = serve(tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr


def test_prefill_chunk_larger_than_batch_is_rejected(tmp_path: Path) -> None:
    result = serve(tmp_path, env={"ENCLAVE_ENGINE__PREFILL_CHUNK": "1024",
                                  "ENCLAVE_ENGINE__BATCH_SIZE": "512"})
    assert result.returncode == 2
    assert "prefill_chunk" in result.stderr


def test_error_is_translated_for_chinese_locale(tmp_path: Path) -> None:
    result = serve(tmp_path, "--model", str(tmp_path / "absent.gguf"),
                   env={"LANG": "zh_CN.UTF-8", "LC_ALL": ""})
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("错误：")


def test_models_dir_serves_every_gguf(tmp_path: Path, model_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "second-model.gguf").symlink_to(model_path)
    with running_server(tmp_path, "--models-dir", str(models)) as server:
        listed = [m["id"] for m in server.get("/v1/models").json()["data"]]
        assert listed[0] == DEFAULT_MODEL
        assert "second-model" in listed
        response = server.post("/v1/chat/completions", json={
            "model": "second-model", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hello"}]})
        assert response.status_code == 200
        assert response.json()["model"] == "second-model"
        assert "second-model" in server.get("/ready").json()["models"]


def test_start_up_line_tells_how_to_connect(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        log = server.log()
    assert f"Serving {DEFAULT_MODEL} at {server.base_url}/v1" in log
    assert "context 4096 tokens" in log
    assert "Cherry Studio" in log
