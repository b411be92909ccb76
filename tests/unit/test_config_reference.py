"""docs/configuration.md is the output of ``enclave config reference``, and settings load."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.config import load_settings
from enclave.errors import ConfigError
from enclave.settings_reference import _mask, effective_toml, reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale: run `enclave config reference > docs/configuration.md`"
    )


def test_every_setting_has_a_description() -> None:
    rows = [line for line in reference_markdown().splitlines() if line.startswith("| `")]
    undescribed = [row.split("|")[1].strip() for row in rows if row.rstrip().endswith("|  |")]
    assert undescribed == []


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text("[engine]\nparallel = 4\ncontext_size = 2048\n")
    monkeypatch.setenv("ENCLAVE_ENGINE__PARALLEL", "2")
    settings = load_settings(config)
    assert settings.engine.parallel == 2
    assert settings.engine.context_size == 2048


def test_command_line_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_SERVER__PORT", "9000")
    settings = load_settings(None, {"server": {"port": 9100}})
    assert settings.server.port == 9100


def test_invalid_values_are_all_named(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text("[engine]\nparallel = 0\nqueue_size = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "engine.parallel = 0" in message
    assert "engine.queue_size = -1" in message
    assert "ENCLAVE_ENGINE__QUEUE_SIZE" in message


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "absent.toml")
    assert "absent.toml" in str(caught.value)


def test_show_prints_sections() -> None:
    text = effective_toml(load_settings(None))
    assert "[engine]" in text
    assert "parallel = 8" in text


def test_show_masks_secrets() -> None:
    masked = _mask("", {"store_url": "postgresql://audit:hunter2@db/enclave",
                        "api_key": "sk-enc-abc", "host": "127.0.0.1"})
    assert masked == {"store_url": "postgresql://audit:********@db/enclave",
                      "api_key": "********", "host": "127.0.0.1"}
