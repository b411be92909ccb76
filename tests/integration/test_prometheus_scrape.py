"""A real Prometheus server scrapes a real Enclave server; PromQL returns what was sent.

Prometheus comes from the Debian package ``prometheus``, which ``make test`` installs when
it is missing; these tests are skipped only where it cannot be installed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess, free_port, running_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="prometheus is not installed (apt-get install prometheus)"),
]

ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
START_TIMEOUT_S = 30.0
REQUESTS = 3
MAX_TOKENS = 5


@contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """Run Prometheus on a free loopback port, scraping ``target`` every second."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        f"rule_files:\n  - {ALERT_RULES}\n"
        "scrape_configs:\n"
        "  - job_name: enclave\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    log_path = tmp_path / "prometheus.log"
    command = ["prometheus", f"--config.file={config}",
               f"--storage.tsdb.path={tmp_path / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(base_url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {START_TIMEOUT_S} s")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(prometheus_url: str, expression: str) -> list[dict[str, object]]:
    response = httpx.get(prometheus_url + "/api/v1/query", params={"query": expression},
                         timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def eventually(read: Callable[[], float | None], expected: Callable[[float], bool],
               timeout_s: float = 30.0) -> float | None:
    """Poll ``read`` until ``expected`` holds for its value; return the last value."""
    deadline = time.monotonic() + timeout_s
    current = read()
    while (current is None or not expected(current)) and time.monotonic() < deadline:
        time.sleep(0.5)
        current = read()
    return current


def scalar(prometheus_url: str, expression: str) -> float | None:
    result = query(prometheus_url, expression)
    if not result:
        return None
    sample = result[0]["value"]
    assert isinstance(sample, list)
    return float(sample[1])


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, int]]:
    """An Enclave server that served REQUESTS chat requests, and a Prometheus scraping it."""
    folder = tmp_path_factory.mktemp("prometheus")
    with running_server(folder, "--parallel", "1") as server:
        generated = 0
        for index in range(REQUESTS):
            response = server.post("/v1/chat/completions", json={
                "model": DEFAULT_MODEL, "max_tokens": MAX_TOKENS, "temperature": 0,
                "messages": [{"role": "user", "content": f"Count to three ({index})."}]})
            assert response.status_code == 200
            generated += response.json()["usage"]["completion_tokens"]
        with running_prometheus(folder, f"127.0.0.1:{server.port}") as prometheus_url:
            yield server, prometheus_url, generated


def test_prometheus_target_is_up(scraped: tuple[ServerProcess, str, int]) -> None:
    _, prometheus_url, _ = scraped

    up = eventually(lambda: scalar(prometheus_url, 'up{job="enclave"}'), lambda v: v == 1)

    assert up == 1


def test_promql_counts_requests(scraped: tuple[ServerProcess, str, int]) -> None:
    _, prometheus_url, _ = scraped
    expression = ('sum(enclave_requests_total{route="/v1/chat/completions", status="200", '
                  f'model="{DEFAULT_MODEL}"}})')

    count = eventually(lambda: scalar(prometheus_url, expression), lambda v: v >= REQUESTS)

    assert count == REQUESTS


def test_promql_sums_generated_tokens(scraped: tuple[ServerProcess, str, int]) -> None:
    _, prometheus_url, generated = scraped
    expression = "sum(enclave_generation_tokens_total)"

    total = eventually(lambda: scalar(prometheus_url, expression), lambda v: v >= generated)

    assert total == generated


def test_promql_reads_engine_gauges(scraped: tuple[ServerProcess, str, int]) -> None:
    _, prometheus_url, _ = scraped
    expression = f'enclave_slots_capacity{{model="{DEFAULT_MODEL}"}}'

    slots = eventually(lambda: scalar(prometheus_url, expression), lambda v: v == 1)

    assert slots == 1


def test_recording_rule_evaluates(scraped: tuple[ServerProcess, str, int]) -> None:
    _, prometheus_url, _ = scraped

    # rate() needs two scrapes; the rule then yields a ratio for the server.
    ratio = eventually(lambda: scalar(prometheus_url, "enclave:accelerator_utilization:ratio"),
                       lambda v: v >= 0)

    assert ratio is not None
    assert 0 <= ratio <= 1
