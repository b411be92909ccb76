"""Scrape-time collectors: KV-cache fragmentation, subsystem statistics and NVML readings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from enclave.metrics.engine import kv_cache_fragmentation
from enclave.metrics.subsystems import SubsystemStatsCollector
from enclave.ops.gpu import GpuCollector, Nvml


def engine_stats(**values: int) -> dict[str, int]:
    stats = {"kv_cells": 1024, "kv_cells_per_sequence": 1024, "slots_active": 0,
             "kv_active_tokens": 0}
    stats.update(values)
    return stats


# KV-cache fragmentation.


def test_fragmentation_zero_with_unified_cache() -> None:
    stats = engine_stats(slots_active=4, kv_active_tokens=40)

    assert kv_cache_fragmentation(stats) == 0.0


def test_fragmentation_counts_busy_slot_streams() -> None:
    # Four streams of 256 cells; two busy slots hold 100 and 56 tokens.
    stats = engine_stats(kv_cells_per_sequence=256, slots_active=2, kv_active_tokens=156)

    assert kv_cache_fragmentation(stats) == pytest.approx((512 - 156) / 1024)


def test_fragmentation_zero_when_idle() -> None:
    stats = engine_stats(kv_cells_per_sequence=256, slots_active=0, kv_active_tokens=0)

    assert kv_cache_fragmentation(stats) == 0.0


def test_fragmentation_zero_when_streams_full() -> None:
    stats = engine_stats(kv_cells_per_sequence=256, slots_active=4, kv_active_tokens=1024)

    assert kv_cache_fragmentation(stats) == 0.0


# Subsystem statistics.


class Provider:
    def __init__(self, stats: Mapping[str, Any]) -> None:
        self._stats = stats

    def stats(self) -> Mapping[str, Any]:
        return self._stats


class BrokenProvider:
    def stats(self) -> Mapping[str, Any]:
        raise RuntimeError("store closed")


def scrape(providers: dict[str, Any]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SubsystemStatsCollector(providers))
    generate_latest(registry)
    return registry


def test_subsystem_counter_and_gauge() -> None:
    registry = scrape({"audit": Provider({"records_written_total": 7, "spooled": 2})})
    types = {metric.name: metric.type for metric in registry.collect()}

    assert registry.get_sample_value("enclave_audit_records_written_total") == 7
    assert registry.get_sample_value("enclave_audit_spooled") == 2
    assert types == {"enclave_audit_records_written": "counter", "enclave_audit_spooled": "gauge"}


def test_subsystem_registered_later_is_scraped() -> None:
    providers: dict[str, Any] = {}
    registry = CollectorRegistry()
    registry.register(SubsystemStatsCollector(providers))
    providers["pii"] = Provider({"redactions_total": 3})

    assert registry.get_sample_value("enclave_pii_redactions_total") == 3


def test_subsystem_invalid_entries_skipped_once(caplog: pytest.LogCaptureFixture) -> None:
    providers = {
        "audit": Provider({"bad-name": 1, "note": "text", "flag": True, "kept": 5}),
        "bad subsystem": Provider({"x": 1}),
    }
    registry = CollectorRegistry()
    registry.register(SubsystemStatsCollector(providers))

    with caplog.at_level(logging.WARNING, logger="enclave.metrics.subsystems"):
        generate_latest(registry)
        generate_latest(registry)

    assert registry.get_sample_value("enclave_audit_kept") == 5
    assert len(caplog.records) == 4, [record.getMessage() for record in caplog.records]


def test_failing_subsystem_does_not_hide_others(caplog: pytest.LogCaptureFixture) -> None:
    providers = {"audit": BrokenProvider(), "pii": Provider({"findings_total": 9})}

    with caplog.at_level(logging.WARNING, logger="enclave.metrics.subsystems"):
        registry = scrape(providers)

    assert registry.get_sample_value("enclave_pii_findings_total") == 9
    assert any("store closed" in record.getMessage() for record in caplog.records)


# NVML.


class FakeNvmlError(Exception):
    pass


class FakeNotSupported(FakeNvmlError):
    pass


class FakeNvml:
    """The pynvml functions Nvml calls, under pynvml's names, over two devices."""

    NVMLError = FakeNvmlError
    NVMLError_NotSupported = FakeNotSupported

    def __init__(self, *, fail_device: int | None = None) -> None:
        self.fail_device = fail_device
        self.initialised = 0

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index == self.fail_device:
            raise FakeNvmlError("GPU is lost")
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes | str:
        return b"NVIDIA H100 80GB HBM3" if handle == 0 else "NVIDIA A100-SXM4-40GB MIG 1g.5gb"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        if handle == 1:
            raise FakeNotSupported("MIG instances report no utilisation")
        return SimpleNamespace(gpu=87, memory=40)


def gpu_registry(nvml: Nvml) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GpuCollector(nvml))
    return registry


def test_gpu_readings_in_base_units() -> None:
    registry = gpu_registry(Nvml(FakeNvml()))
    first = {"gpu": "0", "name": "NVIDIA H100 80GB HBM3"}
    second = {"gpu": "1", "name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb"}

    assert registry.get_sample_value("enclave_gpu_utilization_ratio", first) == 0.87
    assert registry.get_sample_value("enclave_gpu_memory_used_bytes", first) == 2**30
    assert registry.get_sample_value("enclave_gpu_memory_capacity_bytes", first) == 80 * 2**30
    assert registry.get_sample_value("enclave_gpu_memory_used_bytes", second) == 2 * 2**30
    # Device 1 reports no utilisation, so that one series is absent.
    assert registry.get_sample_value("enclave_gpu_utilization_ratio", second) is None


def test_gpu_nvml_initialised_once() -> None:
    library = FakeNvml()
    nvml = Nvml(library)

    nvml.read()
    nvml.read()

    assert library.initialised == 1


def test_gpu_lost_device_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    nvml = Nvml(FakeNvml(fail_device=0))

    with caplog.at_level(logging.WARNING, logger="enclave.ops.gpu"):
        first = nvml.read()
        second = nvml.read()

    assert [reading.index for reading in first] == [1]
    assert [reading.index for reading in second] == [1]
    assert len(caplog.records) == 1


def test_gpu_metrics_absent_without_nvidia(caplog: pytest.LogCaptureFixture) -> None:
    nvml = Nvml()
    with caplog.at_level(logging.DEBUG, logger="enclave.ops.gpu"):
        readings = nvml.read()
        if readings:
            pytest.skip("this machine has an NVIDIA GPU with a working driver")
        text = generate_latest(gpu_registry(nvml)).decode()

    assert "enclave_gpu" not in text
    assert [record.levelno for record in caplog.records] == [logging.DEBUG]
