"""Settings of ``enclave plan``: the ``[planner]`` section of enclave.toml."""

from __future__ import annotations

from pydantic import Field

from enclave.section import Section


class PlannerSettings(Section):
    bandwidth_efficiency: float = Field(
        0.6, gt=0, le=1, description="Share of peak memory bandwidth that decoding sustains, "
        "applied to every accelerator's figure for the roofline decode rate.",
    )
    gpu_reserved_mib: int = Field(
        768, ge=0, description="GPU memory in MiB taken per device by the driver context and "
        "libraries (CUDA/ROCm, cuBLAS workspaces) before any model buffer.",
    )
    max_devices: int = Field(
        16, ge=1, le=256, description="Largest number of GPUs a recommendation may use; more "
        "than one node's worth means several servers.",
    )
