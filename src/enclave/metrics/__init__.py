"""Prometheus metrics: request counters and latency histograms, engine, process and GPU state.

``enclave.metrics.setup.install_metrics`` builds one registry per application. Request figures
are recorded by an observer when each request ends (see ``enclave.api.lifecycle``); engine,
process, GPU and subsystem figures are read when Prometheus scrapes ``GET /metrics``.
docs/operations.md lists every metric.
"""
