"""GET /metrics on a real server: values follow a real workload, and the dashboard fits them."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from enclave.models.embedded import default_chat_model
from enclave.ops.gpu import GpuCollector, Nvml
from tests.server import DEFAULT_MODEL, ServerProcess, running_server
from tests.unit.test_metrics_collectors import FakeNvml

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHAT = "/v1/chat/completions"
QUEUE_SIZE = 2
# Metric names in PromQL; label names and functions never start with "enclave_".
METRIC_NAME = re.compile(r"\benclave_[a-zA-Z0-9_]+")


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One slot and a queue of two, so a held request makes others wait."""
    with running_server(tmp_path_factory.mktemp("metrics"), "--parallel", "1",
                        env={"ENCLAVE_ENGINE__QUEUE_SIZE": str(QUEUE_SIZE)}) as process:
        yield process


@pytest.fixture(scope="module")
def no_eos_bias() -> dict[str, int]:
    """A logit bias that bans every end-of-generation token, so completions run to max_tokens."""
    from enclave.engine.llama_model import LlamaModel

    model = LlamaModel(default_chat_model(), vocab_only=True)
    try:
        return {str(token): -100 for token in range(model.n_vocab)
                if model.is_end_of_generation(token)}
    finally:
        model.close()


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of /metrics, keyed by name and sorted labels."""
    response = server.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat_body(content: str, bias: dict[str, int], max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, "logit_bias": bias, **extra}


def stream_usage(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    """Stream a chat completion and return the usage of its last chunk."""
    usage: dict[str, Any] = {}
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.base_url + CHAT, json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line.removeprefix("data: ")).get("usage") or usage
    return usage


def wait_for(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_counts_match_requests_sent(metrics_server: ServerProcess,
                                    no_eos_bias: dict[str, int]) -> None:
    before = scrape(metrics_server)
    usages = []
    for index in range(2):
        response = metrics_server.post(CHAT, json=chat_body(f"Name a colour ({index}).",
                                                             no_eos_bias, 6))
        assert response.status_code == 200
        usages.append(response.json()["usage"])
    for index in range(2):
        usages.append(stream_usage(metrics_server, chat_body(f"Name a fruit ({index}).",
                                                             no_eos_bias, 6)))
    after = scrape(metrics_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    model = {"model": DEFAULT_MODEL}
    assert delta("enclave_requests_total", route=CHAT, status="200", **model) == 4
    for histogram in ("enclave_request_duration_seconds", "enclave_time_to_first_token_seconds",
                      "enclave_queue_wait_seconds"):
        assert delta(f"{histogram}_count", **model) == 4, histogram
        assert delta(f"{histogram}_bucket", le="+Inf", **model) == 4, histogram
    assert delta("enclave_prompt_tokens_total", **model) == sum(
        usage["prompt_tokens"] for usage in usages)
    assert delta("enclave_generation_tokens_total", **model) == sum(
        usage["completion_tokens"] for usage in usages)
    assert delta("enclave_prompt_cached_tokens_total", **model) == sum(
        usage["prompt_tokens_details"]["cached_tokens"] for usage in usages)
    # English text with end-of-generation banned: one delta per token, so n-1 gaps each.
    assert delta("enclave_inter_token_latency_seconds_count", **model) == sum(
        usage["completion_tokens"] - 1 for usage in usages)


def test_errors_counted_by_status(metrics_server: ServerProcess) -> None:
    before = scrape(metrics_server)
    unknown = metrics_server.post(CHAT, json={"model": "no-such-model",
                                              "messages": [{"role": "user", "content": "x"}]})
    broken = metrics_server.post(CHAT, content=b"{not json",
                                 headers={"Content-Type": "application/json"})
    missing = metrics_server.get("/no/such/path")
    after = scrape(metrics_server)

    assert (unknown.status_code, broken.status_code, missing.status_code) == (404, 400, 404)
    for labels, expected in (
        ({"route": CHAT, "model": "", "status": "404"}, 1),
        ({"route": CHAT, "model": "", "status": "400"}, 1),
        ({"route": "unmatched", "model": "", "status": "404"}, 1),
    ):
        gained = (value(after, "enclave_requests_total", **labels)
                  - value(before, "enclave_requests_total", **labels))
        assert gained == expected, labels


def test_queue_depth_rises_while_slot_busy(metrics_server: ServerProcess,
                                           no_eos_bias: dict[str, int]) -> None:
    model = {"model": DEFAULT_MODEL}
    before = scrape(metrics_server)
    first_token = threading.Event()
    release = threading.Event()
    statuses: list[int] = []

    def hold_slot() -> None:
        body = {**chat_body("Tell a very long story.", no_eos_bias, 3000), "stream": True}
        with httpx.stream("POST", metrics_server.base_url + CHAT, json=body,
                          timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    first_token.set()
                if release.is_set():
                    break  # closing the stream cancels the generation and frees the slot

    def wait_in_queue(index: int) -> None:
        response = metrics_server.post(CHAT, json=chat_body(f"Say hi ({index}).", no_eos_bias, 3))
        statuses.append(response.status_code)

    holder = threading.Thread(target=hold_slot)
    holder.start()
    waiters = [threading.Thread(target=wait_in_queue, args=(index,)) for index in range(2)]
    try:
        assert first_token.wait(60), "the long request produced no token"
        for waiter in waiters:
            waiter.start()
        wait_for(lambda: value(scrape(metrics_server), "enclave_queue_depth", **model) == 2)
        busy = scrape(metrics_server)
        rejected = metrics_server.post(CHAT, json=chat_body("One too many.", no_eos_bias, 3))
    finally:
        release.set()
        holder.join(60)
        for waiter in waiters:
            if waiter.ident is not None:  # started
                waiter.join(60)
    after = scrape(metrics_server)

    assert value(busy, "enclave_slots_active", **model) == 1
    assert value(busy, "enclave_slots_capacity", **model) == 1
    assert value(busy, "enclave_kv_cache_used_cells", **model) > 0
    assert rejected.status_code == 429
    assert statuses == [200, 200]
    assert value(after, "enclave_queue_depth", **model) == 0
    assert value(after, "enclave_slots_active", **model) == 0
    assert (value(after, "enclave_requests_total", route=CHAT, status="429", **model)
            - value(before, "enclave_requests_total", route=CHAT, status="429", **model)) == 1
    # The two waiting requests waited for the slot; their queue time is in the histogram.
    waited = (value(after, "enclave_queue_wait_seconds_sum", **model)
              - value(before, "enclave_queue_wait_seconds_sum", **model))
    assert waited > 0.05


def test_engine_gauges_match_ready(metrics_server: ServerProcess) -> None:
    ready = metrics_server.get("/ready").json()["models"][DEFAULT_MODEL]
    samples = scrape(metrics_server)
    model = {"model": DEFAULT_MODEL}

    assert value(samples, "enclave_kv_cache_capacity_cells", **model) >= ready["kv_cache_tokens"]
    assert value(samples, "enclave_kv_cache_capacity_cells", **model) == ready["kv_cells"]
    assert value(samples, "enclave_kv_cache_fragmentation_ratio", **model) == 0.0
    assert value(samples, "enclave_engine_compute_seconds_total", **model) > 0
    assert value(samples, "enclave_process_resident_memory_bytes") > 50e6
    assert value(samples, "enclave_build_info", version="0.1.0") == 1


def gpu_sample_names() -> set[str]:
    """Return the sample names the GPU collector exports on a machine with NVIDIA GPUs."""
    registry = CollectorRegistry()
    registry.register(GpuCollector(Nvml(FakeNvml())))
    return {sample.name for family in registry.collect() for sample in family.samples}


def queried_metric_names() -> dict[str, set[str]]:
    """Return the metric names each dashboard panel and alert rule refers to."""
    names: dict[str, set[str]] = {}
    dashboard = json.loads((DEPLOY / "grafana/dashboards/enclave.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.setdefault(f"panel {panel['title']}", set()).update(
                METRIC_NAME.findall(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        names[f"variable {variable['name']}"] = set(METRIC_NAME.findall(variable["definition"]))
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            title = rule.get("alert") or rule["record"]
            names[f"rule {title}"] = set(METRIC_NAME.findall(rule["expr"]))
    return names


def test_dashboard_queries_use_exposed_metrics(metrics_server: ServerProcess,
                                               no_eos_bias: dict[str, int]) -> None:
    metrics_server.post(CHAT, json=chat_body("Hello.", no_eos_bias, 3))
    exposed = {name for name, _ in scrape(metrics_server)} | gpu_sample_names()

    queried = queried_metric_names()
    assert sum(len(names) for names in queried.values()) > 20
    for where, names in queried.items():
        assert names <= exposed, f"{where} queries {sorted(names - exposed)}"


def test_gpu_metrics_absent_without_gpu(metrics_server: ServerProcess) -> None:
    if Nvml().read():
        pytest.skip("this machine has an NVIDIA GPU with a working driver")
    for _ in range(3):
        text = metrics_server.get("/metrics").text

    assert "enclave_gpu_" not in text
    gpu_lines = [line for line in metrics_server.log().splitlines()
                 if "enclave.ops.gpu" in line]
    # One DEBUG line at the first scrape, and nothing louder.
    assert len(gpu_lines) == 1, gpu_lines
    assert " DEBUG " in gpu_lines[0]
    assert "Traceback" not in metrics_server.log()


def test_access_log_line_has_request_fields(metrics_server: ServerProcess,
                                            no_eos_bias: dict[str, int]) -> None:
    secret_word = "Zanzibar7731"
    response = metrics_server.post(
        CHAT, json=chat_body(f"Spell {secret_word}.", no_eos_bias, 4),
        headers={"X-Request-Id": "metrics-log-1"})
    assert response.status_code == 200

    lines = [line for line in metrics_server.log().splitlines()
             if "enclave.access" in line and "request_id=metrics-log-1" in line]
    assert len(lines) == 1, lines
    line = lines[0]
    assert f"model={DEFAULT_MODEL}" in line
    assert "completion_tokens=4" in line
    for field in ("ttft_ms=", "tokens_per_s=", "queue_ms="):
        assert field in line, field
    info_lines = [entry for entry in metrics_server.log().splitlines() if " INFO " in entry]
    assert not any(secret_word in entry for entry in info_lines)
