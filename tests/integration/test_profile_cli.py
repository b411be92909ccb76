"""``enclave profile``: the phase report and the Chrome trace, in process and over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.server import ServerProcess, free_port

pytestmark = pytest.mark.slow

IN_PROCESS_PHASES = {"template rendering", "tokenization", "schedule", "prefill", "decode",
                     "sample", "deliver"}
SERVER_PHASES = {"HTTP and serialisation", "server queue", "server prefill", "server decode"}


def run_profile(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enclave", "profile", *args],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"},
    )


def load_trace(path: Path) -> dict[str, Any]:
    trace: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return trace


def complete_events(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [event for event in trace["traceEvents"] if event["ph"] == "X"]


def assert_valid_trace(trace: dict[str, Any]) -> None:
    """Check the fields chrome://tracing and Perfetto need on every event."""
    assert isinstance(trace["traceEvents"], list)
    for event in trace["traceEvents"]:
        assert event["ph"] in ("X", "M"), event
        assert isinstance(event["name"], str) and event["name"], event
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int), event
        if event["ph"] == "X":
            assert isinstance(event["ts"], int | float) and event["ts"] >= 0, event
            assert isinstance(event["dur"], int | float) and event["dur"] >= 0, event
            assert isinstance(event["args"], dict), event


def test_profile_in_process_writes_trace(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.json"

    result = run_profile(tmp_path, "--requests", "3", "--concurrency", "3", "--parallel", "2",
                         "--max-tokens", "6", "--trace", str(trace_path))

    assert result.returncode == 0, result.stderr
    trace = load_trace(trace_path)
    assert_valid_trace(trace)
    names = {event["name"] for event in complete_events(trace)}
    assert names >= IN_PROCESS_PHASES
    assert {"model load", "request", "queued", "prefilling", "decoding"} <= names
    tracks = {event["args"]["name"] for event in trace["traceEvents"] if event["ph"] == "M"}
    assert tracks == {"scheduler", "request 1", "request 2", "request 3"}
    for phase in IN_PROCESS_PHASES:
        assert phase in result.stdout, phase
    assert "llama_perf_context" in result.stdout
    assert "generated tokens 18" in result.stdout


def test_profile_counts_every_generated_token(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.json"

    result = run_profile(tmp_path, "--requests", "2", "--max-tokens", "5",
                         "--trace", str(trace_path))

    assert result.returncode == 0, result.stderr
    events = complete_events(load_trace(trace_path))
    decoded = sum(event["args"]["generated_tokens"] for event in events
                  if event["name"] == "decode")
    prefilled = [event for event in events if event["name"] == "prefill"]
    # One request at a time: each prefill yields the first token, each decode step one more.
    assert len(prefilled) == 2
    assert decoded == 2 * (5 - 1)


def test_profile_against_server(tmp_path: Path, server: ServerProcess) -> None:
    trace_path = tmp_path / "trace.json"

    result = run_profile(tmp_path, "--url", server.base_url, "--requests", "2",
                         "--max-tokens", "4", "--trace", str(trace_path))

    assert result.returncode == 0, result.stderr
    trace = load_trace(trace_path)
    assert_valid_trace(trace)
    names = {event["name"] for event in complete_events(trace)}
    assert names >= SERVER_PHASES
    assert "HTTP and serialisation" in result.stdout
    assert "llama_perf_context" not in result.stdout


def test_profile_unreachable_url_fails_cleanly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = run_profile(tmp_path, "--url", url, "--requests", "1",
                         "--trace", str(tmp_path / "trace.json"))

    assert result.returncode == 2
    assert result.stderr.startswith("Error: Cannot reach")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "trace.json").exists()
