"""The dashboards: valid for the Grafana schema version they declare, and showing what operators need."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from grafana_dashboard_model import SCHEMA_VERSION, Dashboard
from monitoring_env import DASHBOARDS_DIR
from pydantic import ValidationError

DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _exprs(dashboard: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))


def test_both_dashboards_exist() -> None:
    assert [p.name for p in DASHBOARD_FILES] == ["deployment.json", "fleet-overview.json"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_valid_for_its_schema_version(path: Path) -> None:
    data = _load(path)
    assert data["schemaVersion"] == SCHEMA_VERSION
    Dashboard.model_validate(data)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d["panels"][1].pop("gridPos"), "gridPos"),
        (lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "not unique"),
        (lambda d: d["panels"][2]["gridPos"].update(d["panels"][1]["gridPos"]), "overlap"),
        (lambda d: d["panels"][1]["gridPos"].update(x=20, w=12), "exceeds"),
        (lambda d: d["panels"][1]["targets"][0].update(expr='up{pod="$pod"}'), "neither defined"),
        (lambda d: d["panels"][1].update(datasource={"type": "prometheus", "uid": "${ds}"}), "names no datasource"),
        (lambda d: d.update(schemaVersion=27), "schemaVersion"),
        (lambda d: d["panels"][1].update(colour="red"), "colour"),
        (lambda d: d["panels"][1].update(targets=[]), "targets"),
    ],
)
def test_the_model_rejects_broken_dashboards(breakage: Any, message: str) -> None:
    broken = copy.deepcopy(_load(DASHBOARDS_DIR / "deployment.json"))
    breakage(broken)
    with pytest.raises(ValidationError, match=message):
        Dashboard.model_validate(broken)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_uses_the_datasource_variable(path: Path) -> None:
    data = _load(path)
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_deployment_dashboard_has_the_deployment_variable_and_the_required_views() -> None:
    data = _load(DASHBOARDS_DIR / "deployment.json")
    assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "namespace", "deployment"}
    exprs = _exprs(data)
    required = {
        "requests/s": "gptoss_requests_total",
        "output tokens/s": "gptoss_deployment:gptoss_generated_tokens:rate1m",
        "TTFT p50": "gptoss_deployment:gptoss_time_to_first_token_seconds:p50",
        "TTFT p90": "gptoss_deployment:gptoss_time_to_first_token_seconds:p90",
        "TTFT p99": "gptoss_deployment:gptoss_time_to_first_token_seconds:p99",
        "waiting requests": "gptoss_requests_waiting",
        "KV cache": "gptoss_kv_cache_utilization_ratio",
        "GPU utilization": "nv_gpu_utilization",
        "GPU memory": "nv_gpu_memory_used_bytes",
        "desired replicas": "gptoss_operator_desired_replicas",
        "ready replicas": "gptoss_operator_ready_replicas",
        "autoscaler decisions": "gptoss_operator_autoscaler_decisions_total",
    }
    missing = [view for view, metric in required.items() if metric not in exprs]
    assert missing == []
    assert 'gptoss_deployment="$deployment"' in exprs


def test_fleet_dashboard_covers_every_deployment_and_the_operator() -> None:
    data = _load(DASHBOARDS_DIR / "fleet-overview.json")
    exprs = _exprs(data)
    for metric in (
        "gptoss_operator_deployments",
        "gptoss_deployment:gptoss_requests:rate1m",
        "gptoss_deployment:gptoss_generated_tokens:rate1m",
        "gptoss_deployment:gptoss_time_to_first_token_seconds:p90",
        "gptoss_deployment:gptoss_kv_cache_utilization_ratio:max",
        "gptoss_deployment:nv_gpu_utilization:avg",
        "result:gptoss_operator_reconciles:rate5m",
    ):
        assert metric in exprs
    namespace = next(v for v in data["templating"]["list"] if v["name"] == "namespace")
    assert namespace["includeAll"] and namespace["multi"]


def test_dashboard_uids_are_distinct() -> None:
    uids = [_load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(set(uids)) == len(uids)
