"""What the current machine offers: RAM, and NVIDIA GPUs through NVML when present."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]

from enclave.i18n import _

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Machine:
    """RAM and GPUs of this machine, and whether llama.cpp here can offload to a GPU."""

    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[Gpu] = field(default_factory=list)
    gpu_offload: bool = False
    gpu_note: str = ""


def _nvidia_gpus() -> tuple[list[Gpu], str]:
    """Return the NVIDIA GPUs NVML reports, or none and the reason.

    NOTE: only the no-driver path has run in Enclave's tests; the NVML calls follow the
    nvidia-ml-py API but have not met a real GPU here.
    """
    try:
        import pynvml  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return [], _("nvidia-ml-py is not installed ({command})",
                     command=".venv/bin/pip install nvidia-ml-py")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], _("no NVIDIA driver ({error})", error=exc)
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(Gpu(name.decode() if isinstance(name, bytes) else str(name),
                            int(memory.total), int(memory.free)))
        return gpus, ""
    finally:
        pynvml.nvmlShutdown()


def _llama_gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def inspect_machine() -> Machine:
    """Return this machine's RAM and GPUs; a missing GPU or driver is not an error."""
    memory = psutil.virtual_memory()
    gpus, note = _nvidia_gpus()
    if note:
        logger.debug("No GPU inspected: %s", note)
    return Machine(
        ram_total_bytes=int(memory.total),
        ram_available_bytes=int(memory.available),
        gpus=gpus,
        gpu_offload=_llama_gpu_offload(),
        gpu_note=note,
    )
