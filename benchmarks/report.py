"""Assemble docs/benchmarks.md from the results of the last ``make bench``.

``python -m benchmarks.report`` reads every benchmarks/results/<name>.json and .md and
writes one page: the machine each run was measured on, then each benchmark's table under a
heading. Commentary on the numbers lives in the subsystem docs that the page links to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.common import RESULTS_DIR

PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

# Result name, heading, and the document that explains the benchmark. Results that are
# missing are listed as not run.
NOTES = {
    "quantization": "The F32 reference was converted from the shipped Q4_1, so Q4_1 looks "
                    "nearly lossless and the K-quant rows come out in an unusual order; "
                    "quantization.md explains both.",
}
SECTIONS = [
    ("serving", "Serving: continuous batching and prefix cache", "engine.md"),
    ("serving-flash-on", "Serving with flash attention on", "engine.md"),
    ("structured_output", "Structured output: grammar sampling", "clients.md"),
    ("embeddings", "Embeddings: llama.cpp against PyTorch", "embeddings.md"),
    ("pii", "PII detection against Presidio", "privacy.md"),
    ("access", "API key checks and the egress guard", "security.md"),
    ("audit", "Audit trail overhead", "audit.md"),
    ("metrics_overhead", "Metrics overhead", "operations.md"),
    ("planner", "Hardware planner against measured memory", "planner.md"),
    ("quantization", "Quantization quality loss", "quantization.md"),
]

HEADER = """# Benchmarks

The numbers of the last `make bench` run, one section per benchmark. Each section names the
machine it ran on; numbers from different machines do not compare. The linked document
explains what each benchmark measures and what the numbers mean. `make bench` rewrites this
page at the end; `.venv/bin/python -m benchmarks.report` rebuilds it from the stored results.
Rates are medians of a few runs on a VM that other jobs may share, so differences of a few
percent are noise: a server stream has measured 102% of the raw decode rate it wraps.
"""


def describe_machine(machine: dict[str, object]) -> str:
    """Return one line naming the machine, date and llama.cpp build of a result."""
    features = machine.get("llama_cpp_features")
    build = f"; llama.cpp CPU features: {features}" if features else ""
    return (f"Measured on {machine.get('date', '?')}: {machine.get('cpus', '?')} CPUs "
            f"({machine.get('processor', '?')}), Python {machine.get('python', '?')}{build}.")


def demote_headings(markdown: str) -> str:
    """Return markdown with every heading two levels lower, to nest under a section."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            line = "##" + line
        lines.append(line)
    return "\n".join(lines)


def section(name: str, heading: str, document: str) -> str:
    """Return the markdown section of one benchmark's results."""
    json_path = RESULTS_DIR / f"{name}.json"
    markdown_path = RESULTS_DIR / f"{name}.md"
    lines = [f"## {heading}", ""]
    if not (json_path.is_file() and markdown_path.is_file()):
        lines += [f"Not run: `{json_path.name}` is missing.", ""]
        return "\n".join(lines)

    machine = json.loads(json_path.read_text()).get("machine", {})
    lines += [describe_machine(machine), f"Details: [{document}]({document}).", ""]
    if name in NOTES:
        lines += [NOTES[name], ""]
    lines.append(demote_headings(markdown_path.read_text().strip()))
    lines.append("")
    return "\n".join(lines)


def render() -> str:
    """Return the whole page."""
    parts = [HEADER]
    parts += [section(name, heading, document) for name, heading, document in SECTIONS]
    return "\n".join(parts)


def main() -> None:
    PAGE.write_text(render())
    print(f"written to {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
