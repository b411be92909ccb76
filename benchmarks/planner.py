"""Planner benchmark: planned memory against resident memory measured in llama.cpp.

For each case (context x parallel slots x KV-cache type), a fresh Python process loads the
embedded SmolLM2 Q4_1 with llama-cpp-python's low-level API. It creates one context with the
parameters ``enclave.engine.scheduler`` uses (one unified KV cache of context x slots cells,
batch 512), then

1. decodes a 512-token prompt asking for the logits of its last token only, as serving does,
   and records RSS ("serving");
2. decodes another 512 tokens asking for the logits of all of them, as perplexity and
   ``enclave eval-quant`` do, which touches every page of the compute buffer llama.cpp
   reserved and grows the logits buffer to 512 rows, and records RSS again ("peak").

Measured memory is the RSS growth over the process before the model was loaded. The plan for
"peak" is ``estimate_memory`` with ``logits_rows = 512``; the target is within 10% in every
case. The serving figure is listed too: on CPU, pages of the compute buffer that a serving
batch never touches do not count in RSS, so it is expected below the plan (a GPU commits the
whole reservation).

Usage: ``python -m benchmarks planner`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import Any

from benchmarks.common import markdown_table, write_results
from enclave.models.embedded import default_chat_model
from enclave.models.gguf_reader import read_gguf
from enclave.planner.architecture import from_gguf
from enclave.planner.memory import Workload, estimate_memory
from enclave.planner.weights import file_weights

CONTEXTS = (2048, 8192, 32768)
PARALLEL = (1, 4, 8)
KV_TYPES = ("f16", "q8_0")
BATCH = 512
THREADS = 2
TARGET_ERROR = 0.10
MIB = 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def worker(context: int, parallel: int, kv_type: str) -> dict[str, Any]:
    """Run one case in this process and return its RSS figures (bytes)."""
    import logging

    import llama_cpp

    from enclave.engine.llama_model import LlamaModel, init_backend

    buffers: dict[str, float] = {}

    class BufferLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "buffer size" in message:
                name = message.split("buffer size")[0].split(":")[-1].strip()
                buffers[name] = float(message.split("=")[-1].split("MiB")[0])

    llama_logger = logging.getLogger("enclave.llama_cpp")
    llama_logger.setLevel(logging.DEBUG)
    llama_logger.propagate = False
    llama_logger.addHandler(BufferLog())
    init_backend()
    baseline = _rss_bytes()

    model = LlamaModel(default_chat_model())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = context * parallel
    params.n_batch = BATCH
    params.n_ubatch = BATCH
    params.n_seq_max = parallel
    params.n_threads = THREADS
    params.n_threads_batch = THREADS
    params.kv_unified = True
    if kv_type == "q8_0":
        params.type_k = llama_cpp.GGML_TYPE_Q8_0
        params.type_v = llama_cpp.GGML_TYPE_Q8_0
    context_pointer = llama_cpp.llama_init_from_model(model.pointer, params)
    if not context_pointer:
        raise RuntimeError(f"llama.cpp could not create a context for {context} x {parallel}")
    batch = llama_cpp.llama_batch_init(BATCH, 0, 1)

    def decode(start: int, all_logits: bool) -> None:
        for index in range(BATCH):
            batch.token[index] = 1000 + index
            batch.pos[index] = start + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = all_logits or index == BATCH - 1
        batch.n_tokens = BATCH
        status = llama_cpp.llama_decode(context_pointer, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    decode(0, all_logits=False)
    serving = _rss_bytes()
    decode(BATCH, all_logits=True)
    peak = _rss_bytes()
    return {"serving_bytes": serving - baseline, "peak_bytes": peak - baseline,
            "llama_buffers_mib": buffers}


def _run_case(context: int, parallel: int, kv_type: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.planner", "--worker", str(context),
               str(parallel), kv_type]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"case {context} x {parallel} {kv_type} failed:\n"
                           f"{result.stderr[-2000:]}")
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def main() -> None:
    path = default_chat_model()
    summary = read_gguf(path)
    arch = from_gguf(summary)
    weights = file_weights(summary)

    cases = []
    for context, parallel, kv_type in itertools.product(CONTEXTS, PARALLEL, KV_TYPES):
        measured = _run_case(context, parallel, kv_type)
        peak_plan = estimate_memory(arch, weights.total_bytes, Workload(
            context=context, concurrency=parallel, kv_type=kv_type, batch_size=BATCH,
            logits_rows=BATCH))
        serving_plan = estimate_memory(arch, weights.total_bytes, Workload(
            context=context, concurrency=parallel, kv_type=kv_type, batch_size=BATCH))
        error = peak_plan.total / measured["peak_bytes"] - 1.0
        cases.append({
            "context": context, "parallel": parallel, "kv_type": kv_type,
            "planned_peak_bytes": peak_plan.total, "measured_peak_bytes": measured["peak_bytes"],
            "error": error,
            "planned_serving_bytes": serving_plan.total,
            "measured_serving_bytes": measured["serving_bytes"],
            "planned_kv_bytes": peak_plan.kv_cache, "planned_compute_bytes": peak_plan.compute,
            "llama_buffers_mib": measured["llama_buffers_mib"],
        })
        print(f"  {context:>6} x {parallel} {kv_type:5}: planned "
              f"{peak_plan.total / MIB:8.1f} MiB, measured {measured['peak_bytes'] / MIB:8.1f} "
              f"MiB ({error:+.1%})", flush=True)

    worst = max(abs(case["error"]) for case in cases)
    rows = [[f"{case['context']} x {case['parallel']}", case["kv_type"],
             f"{case['planned_peak_bytes'] / MIB:.1f}", f"{case['measured_peak_bytes'] / MIB:.1f}",
             f"{case['error']:+.1%}", f"{case['planned_serving_bytes'] / MIB:.1f}",
             f"{case['measured_serving_bytes'] / MIB:.1f}"] for case in cases]
    markdown = (
        f"# Planner: planned vs measured memory\n\nModel {path.name} ({weights.type_name}, "
        f"{weights.total_bytes / MIB:.1f} MiB of weights), batch {BATCH}, {THREADS} threads. "
        f"Measured: RSS growth of a fresh process. Worst error {worst:.1%} "
        f"(target {TARGET_ERROR:.0%}).\n\n"
        + markdown_table(["context x slots", "KV", "planned MiB", "measured MiB", "error",
                          "planned serving MiB", "measured serving MiB"], rows)
    )
    output = write_results("planner", {"model": path.name, "batch": BATCH, "threads": THREADS,
                                       "target_error": TARGET_ERROR, "worst_error": worst,
                                       "cases": cases}, markdown)
    print(f"  worst error {worst:.1%}; results in {output}")
    if worst > TARGET_ERROR:
        raise RuntimeError(f"planned memory is off by {worst:.1%}, above the "
                           f"{TARGET_ERROR:.0%} target")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        figures = worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        print(json.dumps(figures))
    else:
        main()
