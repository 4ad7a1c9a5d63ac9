"""The chart's Prometheus Adapter rules serve every metric the operator's HorizontalPodAutoscaler asks for.

The rules file (charts/gpt-oss-operator/files/prometheus-adapter/config.yaml) is what the chart's ConfigMap
carries; its queries are checked by promtool (Debian's `prometheus` package) after the adapter's template
variables are filled in as the adapter fills them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gptoss_operator import builders, planner
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime import contract

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "charts" / "gpt-oss-operator" / "files" / "prometheus-adapter" / "config.yaml"
TEMPLATE = REPO / "charts" / "gpt-oss-operator" / "templates" / "prometheus-adapter-rules.yaml"
SIGNALS = (
    contract.METRIC_REQUESTS_WAITING,
    contract.METRIC_REQUESTS_RUNNING,
    contract.METRIC_KV_CACHE_UTILIZATION,
    contract.METRIC_TIME_TO_FIRST_TOKEN,
)


def rules() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULES.read_text())["rules"])


def hpa_metric_names() -> set[str]:
    """The Pods metrics of the HPA the builders make for a spec with every target set."""
    body = {
        "metadata": {"name": "chat", "namespace": "team", "uid": "u"},
        "spec": {
            "model": "gpt-oss-20b",
            "autoscaling": {
                "enabled": True,
                "mode": "hpa",
                "targets": {
                    "requestsWaitingPerReplica": 4,
                    "requestsRunningPerReplica": 40,
                    "kvCacheUtilization": 0.85,
                    "timeToFirstTokenSeconds": 1.0,
                },
            },
        },
    }
    cr = GptOssDeployment.model_validate(body)
    settings = OperatorSettings()
    children = builders.build_children(cr, planner.plan(cr.spec, settings), settings)
    hpa = next(c for c in children if c["kind"] == "HorizontalPodAutoscaler")
    return {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}


def test_every_hpa_metric_has_a_rule_with_that_name() -> None:
    served = {rule["name"]["as"] for rule in rules()}
    assert hpa_metric_names() == set(SIGNALS)
    assert served == set(SIGNALS)


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["name"]["as"])
def test_rules_map_series_to_pods_of_the_runtime_metrics(rule: dict[str, Any]) -> None:
    served = rule["name"]["as"]
    assert rule["seriesQuery"].startswith(served)  # the runtime's series (the histogram: its buckets)
    assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def filled(query: str, series: str) -> str:
    """The query as the adapter sends it for two pods of one namespace."""
    return (
        query.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="team",pod=~"chat-server-a|chat-server-b"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    records = [
        {
            "record": f"check:{rule['name']['as']}",
            "expr": filled(rule["metricsQuery"], rule["seriesQuery"].split("{")[0]),
        }
        for rule in rules()
    ]
    rule_file = tmp_path / "adapter-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": records}]}))
    result = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_template_ships_the_file_behind_a_value() -> None:
    template = TEMPLATE.read_text()
    assert "if .Values.prometheusAdapter.rules.enabled" in template
    assert '.Files.Get "files/prometheus-adapter/config.yaml"' in template
    values = yaml.safe_load((REPO / "charts" / "gpt-oss-operator" / "values.yaml").read_text())
    assert values["prometheusAdapter"]["rules"]["enabled"] is False  # opt-in: mode operator needs no adapter
