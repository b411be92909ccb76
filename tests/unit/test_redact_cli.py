"""``enclave redact`` run as a real process on temporary JSONL files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECORDS = [
    {"id": 1, "note": "客户手机13812345678", "messages": [
        {"role": "user", "content": "我的邮箱是a@example.com，手机13812345678"},
        {"role": "assistant", "content": "好的"},
    ]},
    {"id": 2, "note": "no personal data", "tags": ["server 10.0.0.12", 42, None]},
]


def run_redact(args: list[str], cwd: Path, stdin: str | None = None,
               lang: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENCLAVE_")}
    env.update(LANG=lang, LC_ALL=lang)
    return subprocess.run(
        [sys.executable, "-m", "enclave", "redact", *args], cwd=cwd, env=env, input=stdin,
        capture_output=True, text=True, timeout=60, check=False,
    )


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def table_counts(output: str) -> dict[str, int]:
    """Return the rows of the counts table: kind (or Total) -> count."""
    rows = [line.split() for line in output.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [json.dumps(record, ensure_ascii=False) for record in RECORDS])


def test_redact_every_string_value(tmp_path: Path, source: Path) -> None:
    result = run_redact([str(source), "-o", "out.jsonl"], tmp_path)

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


def test_redact_only_named_fields(tmp_path: Path, source: Path) -> None:
    result = run_redact([str(source), "--field", "content", "-o", "out.jsonl"], tmp_path)

    assert result.returncode == 0, result.stderr
    first, second = read_jsonl(tmp_path / "out.jsonl")
    assert first["note"] == "客户手机13812345678"
    assert first["messages"][0]["content"] == "我的邮箱是[EMAIL_1]，手机[PHONE_1]"
    assert second == RECORDS[1]
    assert table_counts(result.stdout) == {"EMAIL": 1, "PHONE": 1, "Total": 2}
    assert "2 records read, 1 with personal data." in result.stdout


def test_redact_stdin_to_stdout(tmp_path: Path, source: Path) -> None:
    result = run_redact(["-"], tmp_path, stdin=source.read_text(encoding="utf-8"))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["note"] == "客户手机[PHONE_1]"
    assert table_counts(result.stderr)["Total"] == 4


def test_detect_mode_counts_without_output(tmp_path: Path, source: Path) -> None:
    result = run_redact([str(source), "--mode", "detect"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert table_counts(result.stdout) == {"EMAIL": 1, "IP_ADDRESS": 1, "PHONE": 2, "Total": 4}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]


def test_bad_line_names_line_and_writes_nothing(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ['{"note": "手机13812345678"}', "",
                                                 '{"note": broken}'])
    (tmp_path / "out.jsonl").write_text("previous run\n", encoding="utf-8")

    result = run_redact([str(source), "-o", "out.jsonl"], tmp_path)

    assert result.returncode == 2
    assert "Line 3 of" in result.stderr
    assert "is not valid JSON" in result.stderr
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == "previous run\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_bad_line_on_stdout_writes_nothing(tmp_path: Path) -> None:
    result = run_redact(["-"], tmp_path, stdin='{"note": "13812345678"}\nnot json\n')

    assert result.returncode == 2
    assert result.stdout == ""
    assert "Line 2 of standard input" in result.stderr


def test_messages_in_chinese_locale(tmp_path: Path) -> None:
    result = run_redact(["missing.jsonl"], tmp_path, lang="zh_CN.UTF-8")

    assert result.returncode == 2
    assert "找不到文件 missing.jsonl" in result.stderr
