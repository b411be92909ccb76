"""Metrics overhead: decode speed of a streamed completion with and without a scraper.

One server with one slot streams the same greedy completion (end-of-generation tokens banned,
so every completion has the same length) in alternating rounds: without a scraper, then with a
thread that requests /metrics every 250 ms (sixty times Prometheus' default rate). Tokens/s is
measured by the client, from the first to the last content chunk. Alternating the rounds
spreads slow drift of the machine (other processes, CPU frequency) over both sides.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from tests.server import DEFAULT_MODEL, ServerProcess, running_server

from benchmarks.common import markdown_table, write_results
from enclave.engine.llama_model import LlamaModel
from enclave.models.embedded import default_chat_model

PROMPT = "Write a detailed essay about the history of the printing press in Europe."
MAX_TOKENS = 160
ROUNDS = 5
SCRAPE_INTERVAL_S = 0.25


def eog_bias() -> dict[str, int]:
    model = LlamaModel(default_chat_model(), vocab_only=True)
    try:
        return {str(token): -100 for token in range(model.n_vocab)
                if model.is_end_of_generation(token)}
    finally:
        model.close()


def stream_rate(server: ServerProcess, bias: dict[str, int]) -> float:
    """Stream one completion; return its decode tokens/s as the client measures them."""
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "logit_bias": bias, "stream": True,
            "stream_options": {"include_usage": True}}
    first = last = 0.0
    completion_tokens = 0
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body,
                      timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                completion_tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    if completion_tokens != MAX_TOKENS:
        raise RuntimeError(f"expected {MAX_TOKENS} tokens, the server generated "
                           f"{completion_tokens}")
    return (completion_tokens - 1) / (last - first)


class Scraper:
    """Requests /metrics every SCRAPE_INTERVAL_S on a thread; records each scrape's latency."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies_s: list[float] = []

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self._server.base_url, timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/metrics").raise_for_status()
                self.latencies_s.append(time.perf_counter() - started)
                self._stop.wait(SCRAPE_INTERVAL_S)


def summarize(rates: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(rates), "median": statistics.median(rates),
            "stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0}


def main() -> None:
    bias = eog_bias()
    load_before = os.getloadavg()[0]
    without: list[float] = []
    with_scraper: list[float] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as folder, \
            running_server(Path(folder), "--parallel", "1") as server:
        stream_rate(server, bias)  # warm-up: caches the prompt prefix for every round
        for _ in range(ROUNDS):
            without.append(stream_rate(server, bias))
            with Scraper(server) as scraper:
                with_scraper.append(stream_rate(server, bias))
            latencies.extend(scraper.latencies_s)

    load_after = os.getloadavg()[0]
    plain, scraped = summarize(without), summarize(with_scraper)
    difference = (scraped["mean"] - plain["mean"]) / plain["mean"]
    data: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "tokens_per_answer": MAX_TOKENS,
        "rounds": ROUNDS,
        "scrape_interval_s": SCRAPE_INTERVAL_S,
        "without_scraper_tokens_per_s": plain,
        "with_scraper_tokens_per_s": scraped,
        "difference": difference,
        "scrapes": len(latencies),
        "scrape_latency_ms": {"median": statistics.median(latencies) * 1000.0,
                              "max": max(latencies) * 1000.0},
        # Other processes on the machine add noise; the 1-minute load average shows how much.
        "load_average_1m": {"before": load_before, "after": load_after},
    }
    rows = [
        ["without scraper", f"{plain['mean']:.1f}", f"{plain['median']:.1f}",
         f"{plain['stdev']:.1f}"],
        [f"scrape every {SCRAPE_INTERVAL_S * 1000:.0f} ms", f"{scraped['mean']:.1f}",
         f"{scraped['median']:.1f}", f"{scraped['stdev']:.1f}"],
    ]
    markdown = (
        f"# Metrics overhead\n\n{DEFAULT_MODEL}, one slot, {ROUNDS} alternating rounds of a "
        f"{MAX_TOKENS}-token streamed completion; decode tokens/s measured by the client.\n\n"
        + markdown_table(["condition", "mean tokens/s", "median tokens/s", "stdev"], rows)
        + f"\nDifference of the means: {difference:+.1%}. {len(latencies)} scrapes, median "
        f"{data['scrape_latency_ms']['median']:.1f} ms, max "
        f"{data['scrape_latency_ms']['max']:.1f} ms. Load average (1 min) "
        f"{load_before:.2f} before, {load_after:.2f} after.\n"
    )
    path = write_results("metrics_overhead", data, markdown)
    print(markdown)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
