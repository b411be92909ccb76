"""``enclave plan`` as a user runs it: options, text tables, JSON and translations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave.cli.main import app
from enclave.cli.table import display_width, format_table
from enclave.i18n import set_locale


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENCLAVE_CONFIG", raising=False)
    return CliRunner()


def test_plan_json_has_requested_workload(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "llama-2-7b", "--context", "4096", "--concurrency",
                                 "2", "--kv-type", "q8_0", "--quant", "q8_0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["workload"]["context"] == 4096
    assert data["workload"]["concurrency"] == 2
    assert data["workload"]["kv_type"] == "q8_0"
    assert data["selected"] == "Q8_0"
    selected = next(row for row in data["quantizations"] if row["type"] == "Q8_0")
    assert selected["kv_cache_bytes"] == 2 * 32 * 8192 * 4096 // 32 * 34


def test_plan_text_lists_types_and_hardware(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "deepseek-v3", "--context", "8192", "--concurrency",
                                 "1"])
    assert result.exit_code == 0, result.output
    assert "Multi-head latent attention: KV cache of 576 + 512" in result.output
    assert "* Q4_K_M" in result.output
    assert "H200 141GB" in result.output
    assert "tensor parallel" in result.output
    assert "does not fit in 16" in result.output


def test_plan_defaults_come_from_engine_settings(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "enclave.toml").write_text("[engine]\ncontext_size = 2048\nparallel = 3\n"
                                           "[planner]\nbandwidth_efficiency = 0.5\n")
    result = runner.invoke(app, ["plan", "llama-3-8b", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["workload"]["context"], data["workload"]["concurrency"]) == (2048, 3)
    assert data["assumptions"]["bandwidth_efficiency"] == 0.5


def test_plan_unknown_model_is_one_line_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "llama-9-1t"])
    assert result.exit_code != 0
    assert "is not a file, a model folder or a known model name" in str(result.exception)


def test_plan_in_chinese(runner: CliRunner) -> None:
    set_locale("zh-CN")
    try:
        result = runner.invoke(app, ["plan", "qwen2.5-7b", "--context", "4096"])
    finally:
        set_locale(None)
    assert result.exit_code == 0, result.output
    assert "架构：qwen2" in result.output
    assert "硬件建议" in result.output


def test_table_aligns_wide_characters() -> None:
    table = format_table(["类型", "total"], [["Q8_0", "1.0 GiB"], ["F16", "12.0 GiB"]], "lr")
    widths = {display_width(line) for line in table.splitlines()}
    assert len(widths) == 1
