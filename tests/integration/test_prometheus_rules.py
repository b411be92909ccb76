"""promtool accepts the shipped scrape configuration and alert rules, and the rules fire."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (apt-get install prometheus)",
)

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=60, check=False)


def test_promtool_checks_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_config() -> None:
    result = promtool("check", "config", "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    # alerts.test.yml feeds series to every alert and states which alerts must fire.
    result = promtool("test", "rules", "alerts.test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
