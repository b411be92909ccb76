"""The serving benchmark with flash attention on: faster batches, answers less repeatable.

On the CPU the server turns flash attention off by default so repeated requests give the
same answer (docs/engine.md); this run shows what turning it on buys.
"""

from __future__ import annotations

from benchmarks import serving


def main() -> None:
    serving.main(["--flash-attention", "on"])
