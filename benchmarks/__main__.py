"""Run every benchmark in turn: ``python -m benchmarks [NAME ...]``."""

from __future__ import annotations

import subprocess
import sys
import time

# Each module has main() -> None and writes benchmarks/results/<name>.{json,md}.
BENCHMARKS = [
    "benchmarks.serving",
    "benchmarks.serving_flash_on",
    "benchmarks.pii",
    "benchmarks.audit",
    "benchmarks.embeddings",
    "benchmarks.metrics_overhead",
    "benchmarks.access",
    "benchmarks.structured_output",
    "benchmarks.planner",
    "benchmarks.quantization",
]


def run(selected: list[str]) -> int:
    failures = 0
    for module_name in BENCHMARKS:
        short = module_name.rsplit(".", 1)[-1]
        if selected and short not in selected:
            continue
        started = time.perf_counter()
        print(f"== {short}", flush=True)
        # Each benchmark gets a fresh process. In a shared one, a runtime loaded by an
        # earlier benchmark (PyTorch, another OpenMP thread team) slowed later decode rates
        # to a third.
        completed = subprocess.run(
            [sys.executable, "-c", f"from {module_name} import main; main()"], check=False)
        if completed.returncode != 0:  # one failing benchmark must not hide the others
            failures += 1
            print(f"!! {short} failed with exit status {completed.returncode}",
                  file=sys.stderr, flush=True)
        print(f"== {short} took {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
