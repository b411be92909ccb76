"""Engine metrics read at scrape time: queue, slots, KV cache and llama.cpp compute time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enclave.engine.pool import EnginePool


def kv_cache_fragmentation(stats: Mapping[str, int]) -> float:
    """Return the share of KV-cache cells reserved for running requests but holding no token.

    Without a unified KV cache, llama.cpp splits the cells into one fixed stream per slot
    (``kv_cells_per_sequence`` each), and only the request in that slot can use its free cells.
    That is internal fragmentation in the allocator sense, and this ratio measures it over the
    whole cache: for every busy slot, its stream minus the tokens it holds. An idle slot's free
    cells are not counted because the next request placed there can use them. With a unified
    cache every request draws on one shared pool, nothing is reserved, and the ratio is 0.
    """
    cells = stats["kv_cells"]
    per_sequence = stats["kv_cells_per_sequence"]
    if cells <= 0 or per_sequence >= cells:
        return 0.0
    reserved = stats["slots_active"] * per_sequence
    stranded = max(0, reserved - stats["kv_active_tokens"])
    return stranded / cells


class EngineCollector(Collector):
    """Reads every loaded engine's scheduler when Prometheus scrapes, labelled by model id."""

    def __init__(self, pool: EnginePool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "enclave_queue_depth", "Requests waiting for a free slot.", labels=["model"])
        active = GaugeMetricFamily(
            "enclave_slots_active", "Slots decoding a request now.", labels=["model"])
        capacity = GaugeMetricFamily(
            "enclave_slots_capacity", "Slots configured (engine.parallel).", labels=["model"])
        used = GaugeMetricFamily(
            "enclave_kv_cache_used_cells",
            "KV-cache cells holding tokens, counted per slot and capped at the capacity. A "
            "prefix shared between slots of a unified cache counts once per slot, so this is "
            "an upper bound there.",
            labels=["model"],
        )
        idle = GaugeMetricFamily(
            "enclave_kv_cache_idle_cells",
            "KV-cache cells kept by idle slots for prefix reuse; freed when the cache is full.",
            labels=["model"],
        )
        cells = GaugeMetricFamily(
            "enclave_kv_cache_capacity_cells", "KV-cache cells allocated (one per token).",
            labels=["model"],
        )
        fragmentation = GaugeMetricFamily(
            "enclave_kv_cache_fragmentation_ratio",
            "Share of KV-cache cells reserved for running requests that hold no token; "
            "0 with a unified cache. See docs/operations.md.",
            labels=["model"],
        )
        compute = CounterMetricFamily(
            "enclave_engine_compute_seconds",
            "Time llama.cpp spent in llama_decode since the model was loaded (llama_perf).",
            labels=["model"],
        )

        for model_id, engine in sorted(self._pool.loaded().items()):
            stats = engine.stats()
            queue.add_metric([model_id], stats["queue_depth"])
            active.add_metric([model_id], stats["slots_active"])
            capacity.add_metric([model_id], stats["slots_total"])
            used.add_metric([model_id], min(stats["kv_cached_tokens"], stats["kv_cells"]))
            idle.add_metric([model_id], max(0, stats["kv_cached_tokens"]
                                            - stats["kv_active_tokens"]))
            cells.add_metric([model_id], stats["kv_cells"])
            fragmentation.add_metric([model_id], kv_cache_fragmentation(stats))
            perf = engine.scheduler.perf()
            if perf is not None:
                compute.add_metric([model_id], (perf.prompt_eval_ms + perf.eval_ms) / 1000.0)

        yield from (queue, active, capacity, used, idle, cells, fragmentation, compute)
