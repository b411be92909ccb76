"""``enclave redact`` on temporary JSONL files, in process and once as a real process."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enclave.cli import redact as redact_module
from enclave.cli.main import run
from enclave.i18n import catalogue

RECORDS = [
    {"id": 1, "note": "客户手机13812345678", "messages": [
        {"role": "user", "content": "我的邮箱是a@example.com，手机13812345678"},
        {"role": "assistant", "content": "好的"},
    ]},
    {"id": 2, "note": "no personal data", "tags": ["server 10.0.0.12", 42, None]},
]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


RunRedact = Callable[..., Outcome]


@pytest.fixture
def run_redact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> RunRedact:
    """Return a function that runs ``enclave redact ARGS`` through the CLI entry point."""
    for key in [key for key in os.environ if key.startswith("ENCLAVE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def invoke(args: list[str], stdin: str = "", lang: str = "C.UTF-8") -> Outcome:
        monkeypatch.setenv("LANG", lang)
        monkeypatch.setenv("LC_ALL", lang)
        monkeypatch.setattr(sys, "argv", ["enclave", "redact", *args])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            run()
        captured = capsys.readouterr()
        return Outcome(int(exited.value.code or 0), captured.out, captured.err)

    return invoke


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def table_counts(output: str) -> dict[str, int]:
    """Return the rows of the counts table: kind (or Total) -> count."""
    rows = [line.split() for line in output.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [json.dumps(record, ensure_ascii=False) for record in RECORDS])


def test_redact_every_string_value(run_redact: RunRedact, tmp_path: Path, source: Path) -> None:
    result = run_redact([str(source), "-o", "out.jsonl"])

    assert result.returncode == 0, result.stderr
    first, second = read_jsonl(tmp_path / "out.jsonl")
    assert first["note"] == "客户手机[PHONE_1]"
    assert first["messages"] == [
        {"role": "user", "content": "我的邮箱是[EMAIL_1]，手机[PHONE_1]"},
        {"role": "assistant", "content": "好的"},
    ]
    assert second == {"id": 2, "note": "no personal data", "tags": ["server [IP_ADDRESS_1]",
                                                                    42, None]}
    assert result.stdout.splitlines()[0].split() == ["Kind", "Count"]
    assert table_counts(result.stdout) == {"EMAIL": 1, "IP_ADDRESS": 1, "PHONE": 2, "Total": 4}
    assert result.stdout.splitlines()[-1] == "2 records read, 2 with personal data."


def test_redact_only_named_fields(run_redact: RunRedact, tmp_path: Path, source: Path) -> None:
    result = run_redact([str(source), "--field", "content", "-o", "out.jsonl"])

    assert result.returncode == 0, result.stderr
    first, second = read_jsonl(tmp_path / "out.jsonl")
    assert first["note"] == "客户手机13812345678"
    assert first["messages"][0]["content"] == "我的邮箱是[EMAIL_1]，手机[PHONE_1]"
    assert second == RECORDS[1]
    assert table_counts(result.stdout) == {"EMAIL": 1, "PHONE": 1, "Total": 2}
    assert "2 records read, 1 with personal data." in result.stdout


def test_redact_stdin_to_stdout(run_redact: RunRedact, source: Path) -> None:
    result = run_redact(["-"], stdin=source.read_text(encoding="utf-8"))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["note"] == "客户手机[PHONE_1]"
    assert table_counts(result.stderr)["Total"] == 4


def test_detect_mode_counts_without_output(
    run_redact: RunRedact, tmp_path: Path, source: Path
) -> None:
    result = run_redact([str(source), "--mode", "detect"])

    assert result.returncode == 0, result.stderr
    assert table_counts(result.stdout) == {"EMAIL": 1, "IP_ADDRESS": 1, "PHONE": 2, "Total": 4}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]


def test_bad_line_names_line_and_writes_nothing(tmp_path: Path) -> None:
    # A real process, so the exit status and the one-line error are those a shell sees.
    source = write_jsonl(tmp_path / "in.jsonl", ['{"note": "手机13812345678"}', "",
                                                 '{"note": broken}'])
    (tmp_path / "out.jsonl").write_text("previous run\n", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENCLAVE_")}

    result = subprocess.run(
        [sys.executable, "-m", "enclave", "redact", str(source), "-o", "out.jsonl"],
        cwd=tmp_path, env={**env, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("Error: Line 3 of ")
    assert "is not valid JSON" in result.stderr
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == "previous run\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_bad_line_on_stdout_writes_nothing(run_redact: RunRedact) -> None:
    result = run_redact(["-"], stdin='{"note": "13812345678"}\nnot json\n')

    assert result.returncode == 2
    assert result.stdout == ""
    assert "Line 2 of standard input" in result.stderr


def test_messages_in_chinese_locale(run_redact: RunRedact) -> None:
    result = run_redact(["missing.jsonl"], lang="zh_CN.UTF-8")

    assert result.returncode == 2
    assert "找不到文件 missing.jsonl" in result.stderr


def test_every_message_has_chinese_translation() -> None:
    source = Path(redact_module.__file__).read_text(encoding="utf-8")
    messages = [
        node.args[0].value for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"
        and node.args and isinstance(node.args[0], ast.Constant)
    ]
    translations = catalogue("zh_CN")
    assert len(messages) >= 10
    assert [message for message in messages if message not in translations] == []
