"""The request observer: what one finished request adds to each metric."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from enclave.api.lifecycle import RequestRecord
from enclave.metrics.requests import UNMATCHED_ROUTE, RequestMetrics

MODEL = "tiny-model"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def finished_record(*, accepted: bool = True, route: str | None = "/v1/chat/completions",
                    status: int = 200) -> RequestRecord:
    record = RequestRecord(request_id="req-1", method="POST", route="/v1/chat/completions",
                           client="127.0.0.1")
    record.started = time.perf_counter() - 2.0
    record.status = status
    if route is not None:
        record.attributes["route_template"] = route
    if accepted:
        record.accepted = True
        record.model = MODEL
        record.prompt_tokens = 31
        record.cached_tokens = 12
        record.completion_tokens = 4
        record.queue_s = 0.3
        record.first_token_at = record.started + 0.5
        record.token_gaps_s = [0.02, 0.03, 0.2]
        record.last_token_at = record.first_token_at + sum(record.token_gaps_s)
    return record


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def observer(registry: CollectorRegistry) -> RequestMetrics:
    return RequestMetrics(registry)


def test_requests_counted_by_route_model_status(
    registry: CollectorRegistry, observer: RequestMetrics
) -> None:
    observer.request_finished(finished_record())
    observer.request_finished(finished_record())
    observer.request_finished(finished_record(accepted=False, route="/health", status=503))

    assert sample(registry, "enclave_requests_total", route="/v1/chat/completions",
                  model=MODEL, status="200") == 2
    assert sample(registry, "enclave_requests_total", route="/health", model="",
                  status="503") == 1


def test_unmatched_path_gets_one_label(
    registry: CollectorRegistry, observer: RequestMetrics
) -> None:
    for _ in range(3):
        observer.request_finished(finished_record(accepted=False, route=None, status=404))

    assert sample(registry, "enclave_requests_total", route=UNMATCHED_ROUTE, model="",
                  status="404") == 3


def test_accepted_request_observed_in_histograms(
    registry: CollectorRegistry, observer: RequestMetrics
) -> None:
    observer.request_finished(finished_record())

    assert sample(registry, "enclave_request_duration_seconds_count", model=MODEL) == 1
    assert sample(registry, "enclave_request_duration_seconds_sum", model=MODEL) >= 2.0
    assert sample(registry, "enclave_time_to_first_token_seconds_count", model=MODEL) == 1
    assert sample(registry, "enclave_time_to_first_token_seconds_sum",
                  model=MODEL) == pytest.approx(0.5)
    assert sample(registry, "enclave_queue_wait_seconds_sum", model=MODEL) == pytest.approx(0.3)


def test_every_token_gap_is_one_sample(
    registry: CollectorRegistry, observer: RequestMetrics
) -> None:
    observer.request_finished(finished_record())

    assert sample(registry, "enclave_inter_token_latency_seconds_count", model=MODEL) == 3
    assert sample(registry, "enclave_inter_token_latency_seconds_sum",
                  model=MODEL) == pytest.approx(0.25)
    # 0.02 and 0.03 fall at or below the 0.03 bound; 0.2 does not.
    assert sample(registry, "enclave_inter_token_latency_seconds_bucket", model=MODEL,
                  le="0.03") == 2


def test_token_counters_add_usage(registry: CollectorRegistry, observer: RequestMetrics) -> None:
    observer.request_finished(finished_record())
    observer.request_finished(finished_record())

    assert sample(registry, "enclave_prompt_tokens_total", model=MODEL) == 62
    assert sample(registry, "enclave_prompt_cached_tokens_total", model=MODEL) == 24
    assert sample(registry, "enclave_generation_tokens_total", model=MODEL) == 8


def test_rejected_request_not_timed(registry: CollectorRegistry, observer: RequestMetrics) -> None:
    observer.request_finished(finished_record(accepted=False, status=401))

    assert sample(registry, "enclave_requests_total", route="/v1/chat/completions", model="",
                  status="401") == 1
    assert registry.get_sample_value("enclave_request_duration_seconds_count",
                                     {"model": ""}) is None


def test_request_without_tokens_has_no_ttft(
    registry: CollectorRegistry, observer: RequestMetrics
) -> None:
    record = finished_record()
    record.first_token_at = None
    record.last_token_at = None
    record.token_gaps_s = []
    observer.request_finished(record)

    assert sample(registry, "enclave_request_duration_seconds_count", model=MODEL) == 1
    assert sample(registry, "enclave_time_to_first_token_seconds_count", model=MODEL) == 0
    assert sample(registry, "enclave_inter_token_latency_seconds_count", model=MODEL) == 0
