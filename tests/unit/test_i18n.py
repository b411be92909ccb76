"""Chinese translation of the CLI: catalogue consistency, --help, errors and CJK tables."""

from __future__ import annotations

import ast
import json
import os
import string
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave.audit import AuditSettings, AuditTrail, Principal, RequestClosed, RequestOpened
from enclave.cli.main import app, run
from enclave.config import load_settings
from enclave.errors import ConfigError
from enclave.i18n import catalogue, ngettext, set_locale

SOURCE = Path(__file__).parents[2] / "src" / "enclave"
LOCALES = SOURCE / "i18n" / "locales" / "zh_CN"


def message_ids(path: Path) -> list[str]:
    """Return the literal message ids passed to _() or ngettext() in one source file."""
    messages = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        forms = {"_": 1, "ngettext": 2}.get(node.func.id, 0)
        messages.extend(arg.value for arg in node.args[:forms]
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return messages


def placeholders(text: str) -> Counter[str]:
    """Return each ``{field!conversion:spec}`` of a format string with its count."""
    return Counter(f"{field}!{conversion}:{spec}"
                   for _literal, field, spec, conversion in string.Formatter().parse(text)
                   if field is not None)


def columns(text: str) -> int:
    """Return the terminal columns of ``text``, measured here independently of the CLI."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def test_translations_keep_placeholders() -> None:
    translations = catalogue("zh_CN")
    messages = {message for path in SOURCE.rglob("*.py") for message in message_ids(path)}
    translated = [message for message in messages if message in translations]

    mismatched = [(message, translations[message]) for message in translated
                  if placeholders(message) != placeholders(translations[message])]

    assert len(translated) > 300
    assert mismatched == []


def test_cli_messages_have_chinese_translation() -> None:
    translations = catalogue("zh_CN")
    paths = [*sorted((SOURCE / "cli").glob("*.py")), SOURCE / "config.py",
             *sorted((SOURCE / "models").glob("*.py")), *sorted((SOURCE / "planner").glob("*.py"))]

    missing = [(path.name, message) for path in paths for message in message_ids(path)
               if message not in translations]

    assert missing == []


def test_catalogues_agree_on_shared_messages() -> None:
    seen: dict[str, tuple[str, str]] = {}
    conflicts = []
    for path in sorted(LOCALES.glob("*.json")):
        for message, translation in json.loads(path.read_text(encoding="utf-8")).items():
            first = seen.setdefault(message, (path.name, translation))
            if first[1] != translation:
                conflicts.append((message, first, (path.name, translation)))

    assert conflicts == []


def test_catalogues_say_token() -> None:
    texts = [path.read_text(encoding="utf-8") for path in sorted(LOCALES.glob("*.json"))]

    assert [text for text in texts if "词元" in text] == []


def test_plural_form_follows_count() -> None:
    singular, plural = "{count} record", "{count} records"

    assert ngettext(singular, plural, 1, count=1) == "1 record"
    assert ngettext(singular, plural, 2, count=2) == "2 records"
    assert ngettext(singular, plural, 0, count=0) == "0 records"


def settings_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locale: str) -> str:
    """Return the message of loading settings with two invalid environment variables."""
    for name in [name for name in os.environ if name.startswith("ENCLAVE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENCLAVE_ENGINE__PARALLEL", "0")
    monkeypatch.setenv("ENCLAVE_SERVER__LOG_LEVEL", "loud")
    set_locale(locale)
    try:
        with pytest.raises(ConfigError) as raised:
            load_settings()
    finally:
        set_locale(None)
    return str(raised.value)


def test_settings_error_in_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(tmp_path, monkeypatch, "zh_CN")

    assert message.startswith("配置无效（ENCLAVE_* 环境变量和默认值）：")
    assert "engine.parallel = '0'：应大于或等于 1（文件中的键 engine.parallel" in message
    assert "应为以下值之一：'debug', 'info', 'warning', 'error'" in message
    assert "Input should" not in message


def test_settings_error_in_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(tmp_path, monkeypatch, "en")

    assert message.startswith("Invalid settings (ENCLAVE_* environment and defaults):")
    assert "engine.parallel = '0': Input should be greater than or equal to 1 (file key" in message
    assert "Input should be one of: 'debug', 'info', 'warning', 'error'" in message


def test_option_error_names_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("ENCLAVE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_settings(overrides={"server": {"port": 70000}})

    message = str(raised.value)
    assert message.startswith("Invalid command-line option:")
    assert "server.port = 70000: Input should be less than or equal to 65535" in message
    assert "ENCLAVE_" not in message


def help_text(lang: str, *command: str, columns: int = 200) -> str:
    """Run ``enclave COMMAND --help`` in a fresh process, as help is built at import time."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("ENCLAVE_", "LC_", "LANG"))}
    environment.update(LANG=lang, COLUMNS=str(columns))
    completed = subprocess.run([sys.executable, "-m", "enclave", *command, "--help"],
                               capture_output=True, text=True, env=environment, timeout=60,
                               check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_serve_help_in_chinese() -> None:
    text = help_text("zh_CN.UTF-8", "serve")

    assert "通过兼容 OpenAI 和 Ollama 的 HTTP API 提供模型服务。" in text
    assert "监听地址（默认 127.0.0.1）。" in text
    assert "每个请求的最大 token 数，提示词与回答合计。" in text
    assert "Address to listen on" not in text


def test_audit_search_help_in_chinese() -> None:
    text = help_text("zh_CN.UTF-8", "audit", "search")

    assert "按时间从早到晚列出请求及其结果。" in text
    assert "只包括该用户 ID 的请求。" in text
    assert "--user" in text
    assert "Only requests of this user id." not in text


def test_chinese_help_is_not_cropped() -> None:
    text = help_text("zh_CN.UTF-8", "doctor", columns=80)
    joined = " ".join(text.split())

    assert "…" not in text
    assert "可重复指定多个。默认：无。" in joined
    assert "默认：配置中的地址（server.host 和 server.port）。" in joined


def test_help_stays_english_without_chinese_locale() -> None:
    text = help_text("C.UTF-8", "serve")

    assert "Serve a model over OpenAI- and Ollama-compatible HTTP APIs." in text
    assert "Address to listen on (default 127.0.0.1)." in text
    assert "监听地址" not in text


@pytest.fixture
def chinese_audit_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with requests of users whose names are Chinese and Latin."""
    for name in list(os.environ):
        if name.startswith("ENCLAVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with AuditTrail(AuditSettings(), tmp_path) as trail:
        for index, user in enumerate(["张三", "bob", "欧阳明月"]):
            trail.open_request(RequestOpened(
                f"req-{index}", Principal(user, "sk-ab12"), "/v1/chat/completions", "smollm2",
                "hello", client="127.0.0.1"))
            trail.complete_request(RequestClosed(f"req-{index}", 200, response_chars=5,
                                                 prompt_tokens=7, completion_tokens=3,
                                                 latency_ms=12.5))
    return tmp_path


def test_audit_table_aligns_chinese_text(chinese_audit_store: Path) -> None:
    set_locale("zh_CN")
    try:
        result = CliRunner().invoke(app, ["audit", "search"])
    finally:
        set_locale(None)
    lines = result.output.splitlines()

    assert result.exit_code == 0, result.output
    assert lines[0].startswith("时间")
    assert len(lines) == 4
    # The model column starts at the same terminal column on the header and on every row.
    starts = {columns(line[:line.index(label)])
              for line, label in zip(lines, ["模型", "smollm2", "smollm2", "smollm2"],
                                     strict=True)}
    assert len(starts) == 1
    # So does the route column after it.
    starts = {columns(line[:line.index(label)])
              for line, label in zip(lines, ["路由", "/v1/", "/v1/", "/v1/"], strict=True)}
    assert len(starts) == 1


def test_only_table_module_measures_width() -> None:
    measuring = sorted(path.name for path in (SOURCE / "cli").glob("*.py")
                       if "east_asian_width" in path.read_text(encoding="utf-8"))

    assert measuring == ["table.py"]


def redact_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str], lang: str) -> str:
    """Run ``enclave redact`` on a file whose first line is cut short; return stderr."""
    for name in [name for name in os.environ if name.startswith(("ENCLAVE_", "LC_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANG", lang)
    (tmp_path / "cut.jsonl").write_text('{"note": "x"\n{"note": "y"}\n', encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["enclave", "redact", "cut.jsonl"])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_redact_json_error_in_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    error = redact_error(tmp_path, monkeypatch, capsys, "zh_CN.UTF-8")

    assert error.startswith("错误：cut.jsonl 第 1 行不是有效的 JSON（第 13 列：缺少 ',' 分隔符）")
    assert "Expecting" not in error


def test_redact_json_error_column_ignores_line_break(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    error = redact_error(tmp_path, monkeypatch, capsys, "C.UTF-8")

    assert "(Expecting ',' delimiter at column 13)" in error
