"""NVIDIA GPU utilisation and memory through NVML (the ``nvidia-ml-py`` package).

On a machine without an NVIDIA driver or without the package, ``Nvml.read()`` returns an
empty list and the GPU metrics are simply absent: the first attempt logs one DEBUG line and
later scrapes do not try again.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device's state at one moment."""

    index: int
    name: str
    # None where the device does not report utilisation (a MIG instance, for example).
    utilization_ratio: float | None
    memory_used_bytes: int
    memory_total_bytes: int


class Nvml:
    """NVML, initialised on first use; a missing driver or library disables it for good."""

    def __init__(self, library: Any = None) -> None:
        # ``library`` replaces the pynvml module, for tests of the reading logic.
        self._library = library
        self._ready: bool | None = None
        self._lock = threading.Lock()
        self._failing_devices: set[int] = set()

    def _initialise(self) -> bool:
        try:
            library = self._library or importlib.import_module("pynvml")
        except ImportError:
            logger.debug("nvidia-ml-py is not installed; GPU metrics are off")
            return False
        try:
            library.nvmlInit()
        except library.NVMLError as exc:  # no driver, no libnvidia-ml.so, no device
            logger.debug("NVML is not available (%s); GPU metrics are off", exc)
            return False
        self._library = library
        return True

    def read(self) -> list[GpuReading]:
        """Return the state of every GPU; an empty list without NVML."""
        with self._lock:
            if self._ready is None:
                self._ready = self._initialise()
            if not self._ready:
                return []
            count = int(self._library.nvmlDeviceGetCount())
            readings = [self._read_device(index) for index in range(count)]
        return [reading for reading in readings if reading is not None]

    def _read_device(self, index: int) -> GpuReading | None:
        # NOTE: the test suite runs this against a fake pynvml only; it has not been run on
        # an NVIDIA GPU, so driver-specific errors beyond NVMLError_NotSupported are untested.
        library = self._library
        try:
            handle = library.nvmlDeviceGetHandleByIndex(index)
            name = library.nvmlDeviceGetName(handle)
            memory = library.nvmlDeviceGetMemoryInfo(handle)
            utilization = self._utilization(handle)
        except library.NVMLError as exc:  # a lost or resetting GPU: log once, keep the rest
            if index not in self._failing_devices:
                self._failing_devices.add(index)
                logger.warning("Cannot read GPU %d through NVML (%s); its metrics are "
                               "skipped until it answers again", index, exc)
            return None
        self._failing_devices.discard(index)
        return GpuReading(
            index=index,
            name=name.decode() if isinstance(name, bytes) else str(name),
            utilization_ratio=utilization,
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
        )

    def _utilization(self, handle: Any) -> float | None:
        library = self._library
        try:
            rates = library.nvmlDeviceGetUtilizationRates(handle)
        except library.NVMLError_NotSupported:
            return None
        # NVML reports the percentage of the last sample period in which a kernel ran.
        return float(rates.gpu) / 100.0


class GpuCollector(Collector):
    """Exports each GPU's utilisation and memory, labelled by index and product name."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml

    def collect(self) -> Iterator[Metric]:
        readings = self._nvml.read()
        if not readings:
            return
        labels = ["gpu", "name"]
        utilization = GaugeMetricFamily(
            "enclave_gpu_utilization_ratio",
            "Share of the last NVML sample period (up to 1 s) in which a kernel ran on the GPU.",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "enclave_gpu_memory_used_bytes", "GPU memory in use, by every process.",
            labels=labels)
        total = GaugeMetricFamily(
            "enclave_gpu_memory_capacity_bytes", "GPU memory installed.", labels=labels)
        for reading in readings:
            values = [str(reading.index), reading.name]
            if reading.utilization_ratio is not None:
                utilization.add_metric(values, reading.utilization_ratio)
            used.add_metric(values, reading.memory_used_bytes)
            total.add_metric(values, reading.memory_total_bytes)
        yield from (utilization, used, total)
