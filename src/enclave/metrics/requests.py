"""Request metrics, recorded by an observer once per request when its response has ended."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from enclave.api.lifecycle import RequestRecord

# Bucket bounds in seconds. At one end they fit a 135M-parameter model on two CPU cores: TTFT
# in tens of milliseconds, a token every 5-25 ms. At the other end they fit a 70B model on a
# GPU or a large model on CPU: TTFT of seconds after a long prompt, up to a second per token.
# Bounds are dense between 50 ms and 1 s, so p50 and p95 stay readable for both.
TTFT_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75,
    1.0, 1.5, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
INTER_TOKEN_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
)
# The default request deadline (engine.request_timeout_s) is 600 s.
DURATION_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
QUEUE_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)

# The route label of a request that matched no route, so that scans of random paths cannot
# create one time series per path.
UNMATCHED_ROUTE = "unmatched"


class RequestMetrics:
    """A request observer that counts every request and times those that reached a model."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "enclave_requests", "HTTP requests by route template, model and status code.",
            ["route", "model", "status"], registry=registry,
        )
        self.duration = Histogram(
            "enclave_request_duration_seconds",
            "End-to-end time of requests that reached a model, from arrival to the last byte.",
            ["model"], buckets=DURATION_BUCKETS_S, registry=registry,
        )
        self.time_to_first_token = Histogram(
            "enclave_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
            ["model"], buckets=TTFT_BUCKETS_S, registry=registry,
        )
        self.inter_token_latency = Histogram(
            "enclave_inter_token_latency_seconds",
            "Time between two consecutive tokens sent to a client; one sample per gap.",
            ["model"], buckets=INTER_TOKEN_BUCKETS_S, registry=registry,
        )
        self.queue_wait = Histogram(
            "enclave_queue_wait_seconds",
            "Time a request waited for a free slot before prefill started.",
            ["model"], buckets=QUEUE_BUCKETS_S, registry=registry,
        )
        self.prompt_tokens = Counter(
            "enclave_prompt_tokens", "Prompt tokens of finished requests, cached ones included.",
            ["model"], registry=registry,
        )
        self.cached_prompt_tokens = Counter(
            "enclave_prompt_cached_tokens",
            "Prompt tokens whose KV cache was reused instead of prefilled again.",
            ["model"], registry=registry,
        )
        self.generation_tokens = Counter(
            "enclave_generation_tokens", "Tokens generated for finished requests.",
            ["model"], registry=registry,
        )

    def request_accepted(self, record: RequestRecord) -> None:
        """Record nothing yet: a request is counted once, when it ends."""

    def request_finished(self, record: RequestRecord) -> None:
        """Count the request and, if it reached a model, observe its timings and tokens."""
        model = record.model or ""
        route = record.attributes.get("route_template") or UNMATCHED_ROUTE
        self.requests.labels(route, model, str(record.status)).inc()
        if not record.accepted:
            return

        self.duration.labels(model).observe(record.elapsed_s())
        ttft = record.time_to_first_token_s
        if ttft is not None:
            self.time_to_first_token.labels(model).observe(ttft)
        inter_token = self.inter_token_latency.labels(model)
        for gap in record.token_gaps_s:
            inter_token.observe(gap)
        if record.queue_s is not None:
            self.queue_wait.labels(model).observe(record.queue_s)

        self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        self.cached_prompt_tokens.labels(model).inc(record.cached_tokens)
        self.generation_tokens.labels(model).inc(record.completion_tokens)
