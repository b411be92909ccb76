"""Accelerators the planner recommends from: memory size and peak memory bandwidth.

Figures are vendor peak values as listed on the pages named next to each entry (GB = 10^9
bytes, as vendors count). Sustained bandwidth is lower; the planner applies an efficiency
factor (``planner.bandwidth_efficiency``) to every figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GB = 1000**3


class Kind(StrEnum):
    """Memory the accelerator keeps the model in: dedicated GPU memory, unified memory or RAM."""

    GPU = "gpu"
    UNIFIED = "unified"
    CPU = "cpu"


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One device: its memory, peak bandwidth and how many fit in one server."""

    key: str
    name: str
    kind: Kind
    memory_bytes: int
    bandwidth_bytes_s: float
    max_per_node: int
    usable_fraction: float = 1.0

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * self.usable_fraction)


# Apple silicon lets the GPU wire about three quarters of unified memory by default (the
# Metal recommendedMaxWorkingSetSize that llama.cpp prints at start-up).
_APPLE_GPU_SHARE = 0.75

ACCELERATORS: tuple[Accelerator, ...] = (
    # Consumer GPUs.
    # RTX 4090: 24 GB GDDR6X on a 384-bit bus at 21 Gbps = 1008 GB/s
    # (notebookcheck.pl, "NVIDIA GeForce RTX 4090").
    Accelerator("rtx-4090", "RTX 4090 24GB", Kind.GPU, 24 * GB, 1008 * GB, 8),
    # RTX 3090: 24 GB GDDR6X, 936 GB/s (NVIDIA product page figures, as quoted by szpamela.com).
    Accelerator("rtx-3090", "RTX 3090 24GB", Kind.GPU, 24 * GB, 936 * GB, 8),
    # Data-centre GPUs.
    # L4: 24 GB GDDR6, 300 GB/s; L40S: 48 GB GDDR6, 864 GB/s (NVIDIA datasheets, as listed by
    # store.sourcecode.com and itcreations.com).
    Accelerator("l4", "L4 24GB", Kind.GPU, 24 * GB, 300 * GB, 8),
    Accelerator("a10", "A10 24GB", Kind.GPU, 24 * GB, 600 * GB, 8),  # baseten.co, A10 vs A10G
    Accelerator("l40s", "L40S 48GB", Kind.GPU, 48 * GB, 864 * GB, 8),
    # A100 SXM: 40 GB HBM2 at 1555 GB/s, 80 GB HBM2e at 2039 GB/s (NVIDIA A100 datasheet, as
    # listed by glennklockwood.com/garden/processors/A100).
    Accelerator("a100-40", "A100 40GB", Kind.GPU, 40 * GB, 1555 * GB, 8),
    Accelerator("a100-80", "A100 80GB", Kind.GPU, 80 * GB, 2039 * GB, 8),
    # H100 SXM: 80 GB HBM3, 3.35 TB/s; H200: 141 GB HBM3e, 4.8 TB/s (NVIDIA spec sheets, as
    # quoted by acecloud.ai and lzwjava.github.io).
    Accelerator("h100-80", "H100 SXM 80GB", Kind.GPU, 80 * GB, 3350 * GB, 8),
    Accelerator("h200", "H200 141GB", Kind.GPU, 141 * GB, 4800 * GB, 8),
    # MI300X: 192 GB HBM3, 5.3 TB/s (AMD datasheet, as listed by codesota.com and aiwiki.ai).
    Accelerator("mi300x", "MI300X 192GB", Kind.GPU, 192 * GB, 5300 * GB, 8),
    # Apple silicon. M2 Ultra: up to 192 GB at 800 GB/s; M4 Max: up to 128 GB at 546 GB/s
    # (Apple announcements, as reported by gamebastion.com and blog.patti.tech).
    Accelerator("m2-ultra", "Apple M2 Ultra 192GB", Kind.UNIFIED, 192 * GB, 800 * GB, 1,
                _APPLE_GPU_SHARE),
    Accelerator("m4-max", "Apple M4 Max 128GB", Kind.UNIFIED, 128 * GB, 546 * GB, 1,
                _APPLE_GPU_SHARE),
    # CPU only: bandwidth is channels x transfer rate x 8 bytes per transfer (JEDEC DDR). The
    # memory sizes are typical configurations, not limits.
    Accelerator("cpu-ddr5-2ch", "CPU, 2-channel DDR5-5600, 128GB", Kind.CPU, 128 * GB,
                2 * 5600e6 * 8, 1),
    Accelerator("cpu-ddr5-12ch", "CPU, 12-channel DDR5-4800, 768GB", Kind.CPU, 768 * GB,
                12 * 4800e6 * 8, 1),
)
# NOTE: Huawei Ascend 910B is left out: its 64 GB HBM is well documented, but the published
# bandwidth figures disagree (from 0.4 to 1.6 TB/s), and a roofline rate needs one.


def accelerator(key: str) -> Accelerator | None:
    for candidate in ACCELERATORS:
        if candidate.key == key:
            return candidate
    return None
