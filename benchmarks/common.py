"""Helpers shared by the benchmarks: where results go and how they are written."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the architecture where it is absent."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llama_cpp_features() -> str:
    """Return the CPU features this llama.cpp build uses, such as AVX2 and AMX_INT8."""
    import llama_cpp

    from enclave.engine.llama_model import init_backend

    init_backend()
    info = llama_cpp.llama_print_system_info().decode()
    return " ".join(part.split("=")[0].split(":")[-1].strip() for part in info.split("|")
                    if part.strip().endswith("= 1"))


def machine() -> dict[str, Any]:
    """Return the facts about this machine that a reader needs to compare numbers."""
    import os

    return {
        "cpus": len(os.sched_getaffinity(0)),
        "processor": cpu_model(),
        "llama_cpp_features": llama_cpp_features(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Render rows as a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def write_results(name: str, data: dict[str, Any], markdown: str) -> Path:
    """Write results/<name>.json and results/<name>.md; return the markdown path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **data}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown)
    return path
