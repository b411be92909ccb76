"""Figures that other subsystems (audit trail, PII policy, access control) report.

A subsystem registers an object on ``AppState.stats_providers`` under its name::

    state.stats_providers["audit"] = audit_trail   # any object with stats() -> Mapping

At every scrape, each key of ``stats()`` becomes the metric ``enclave_<name>_<key>``: a
counter when the key ends in ``_total`` (the value must then only grow), a gauge otherwise.
Names must be Prometheus metric names (letters, digits, underscores) and values numbers;
anything else is skipped with one warning per key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_COUNTER_SUFFIX = "_total"


class StatsProvider(Protocol):
    def stats(self) -> Mapping[str, int | float]:
        """Return the subsystem's current figures; called at every scrape, so keep it cheap."""
        ...


class SubsystemStatsCollector(Collector):
    """Turns the ``stats()`` of every registered subsystem into metrics at scrape time."""

    def __init__(self, providers: Mapping[str, Any]) -> None:
        # The live mapping from AppState, so providers registered later are picked up.
        self._providers = providers
        self._warned: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        for name, provider in sorted(self._providers.items()):
            if not self._valid_name(name, name):
                continue
            try:
                stats = provider.stats()
            except Exception as exc:  # a provider's bug must not break the whole scrape
                self._warn_once(f"{name}.stats", "Subsystem %s failed in stats() (%s: %s); "
                                "its metrics are skipped", name, type(exc).__name__, exc)
                continue
            for key, value in sorted(stats.items()):
                metric = self._metric(name, key, value)
                if metric is not None:
                    yield metric

    def _metric(self, name: str, key: str, value: object) -> Metric | None:
        full_name = f"enclave_{name}_{key}"
        if not self._valid_name(full_name, key):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._warn_once(full_name, "Subsystem statistic %s is %r, not a number; skipped",
                            full_name, value)
            return None
        documentation = f"Reported by the {name} subsystem."
        if full_name.endswith(_COUNTER_SUFFIX):
            return CounterMetricFamily(full_name.removesuffix(_COUNTER_SUFFIX), documentation,
                                       value=value)
        return GaugeMetricFamily(full_name, documentation, value=value)

    def _valid_name(self, full_name: str, part: str) -> bool:
        if _NAME.match(part):
            return True
        self._warn_once(full_name, "Subsystem statistic name %r is not a valid Prometheus "
                        "name (letters, digits and _ only); skipped", part)
        return False

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)
