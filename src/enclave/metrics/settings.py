"""Settings of the metrics endpoint: the ``[metrics]`` section of the settings file."""

from __future__ import annotations

from pydantic import Field

from enclave.section import Section


class MetricsSettings(Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics at GET /metrics. They "
                          "hold counts, timings and model ids, never request text.")
    require_key: bool = Field(False, description="Accept /metrics only with an admin API key "
                              "(Authorization: Bearer KEY).")
