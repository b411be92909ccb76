"""Wiring: one registry per application, its observer, its collectors and its route."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Info, ProcessCollector

from enclave import __version__
from enclave.api.state import AppState
from enclave.metrics.engine import EngineCollector
from enclave.metrics.requests import RequestMetrics
from enclave.metrics.router import metrics_router
from enclave.metrics.subsystems import SubsystemStatsCollector
from enclave.ops.gpu import GpuCollector, Nvml


def build_registry(state: AppState) -> tuple[CollectorRegistry, RequestMetrics]:
    """Return a registry holding every Enclave metric, and the request observer feeding it."""
    registry = CollectorRegistry()
    Info("enclave_build", "Version of the running Enclave.", registry=registry).info(
        {"version": __version__})
    request_metrics = RequestMetrics(registry)
    # Reads /proc on Linux; elsewhere it exports nothing.
    ProcessCollector(namespace="enclave", registry=registry)
    registry.register(EngineCollector(state.pool))
    registry.register(GpuCollector(Nvml()))
    registry.register(SubsystemStatsCollector(state.stats_providers))
    return registry, request_metrics


def install_metrics(app: FastAPI, state: AppState) -> None:
    """Serve GET /metrics and record every request, unless metrics.enabled is false."""
    if not state.settings.metrics.enabled:
        return
    registry, request_metrics = build_registry(state)
    state.observers.append(request_metrics)
    app.include_router(metrics_router(registry))
