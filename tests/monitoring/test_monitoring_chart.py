"""The chart's monitoring templates and the PodMonitor relabeling, checked offline.

- PodMonitor endpoint (monitoring/podmonitor_relabel.yaml) and the plain-Prometheus scrape config agree,
  and the endpoint is valid under the Prometheus Operator's real PodMonitor CRD schema.
- With helm available (~/.cache/gpt-oss-operator/bin/helm-*/helm, built by the project's tooling), the
  rendered ServiceMonitor, PrometheusRule and dashboard ConfigMaps embed the monitoring sources and are
  valid under the real CRD schemas / Kubernetes' built-in schemas. Acceptance by a real API server is
  tested in e2e/ on the local cluster.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from monitoring_env import CHART_DIR, DASHBOARDS_DIR, MONITORING_DIR, RELABEL_FILE, RULES_FILE

CACHE = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _crd_schema(kind_plural: str) -> dict[str, Any] | None:
    files = sorted(
        glob.glob(str(CACHE / "crds" / "prometheus-operator-*" / f"monitoring.coreos.com_{kind_plural}.yaml"))
    )
    if not files:
        return None
    crd = yaml.safe_load(Path(files[-1]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _require_crd_schema(kind_plural: str) -> dict[str, Any]:
    schema = _crd_schema(kind_plural)
    if schema is None:
        pytest.skip(f"Prometheus Operator CRDs not cached under {CACHE}/crds: run e2e/cluster/upstream-crds.sh")
    return schema


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden, as `kubectl apply --validate=strict` (the default) and
    server-side field validation treat them; plain JSON-schema validation would let a typo through and
    the API server would prune it silently."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _validate(schema: dict[str, Any], document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(_strict(schema)).validate(document)


def test_scrape_config_repeats_the_podmonitor_relabeling() -> None:
    relabelings = yaml.safe_load(RELABEL_FILE.read_text())["relabelings"]
    converted = [{_camel_to_snake(k): v for k, v in rule.items()} for rule in relabelings]
    jobs = yaml.safe_load((MONITORING_DIR / "scrape-config.yaml").read_text())["scrape_configs"]
    pods_job = next(job for job in jobs if job["job_name"] == "gpt-oss-pods")
    tail = pods_job["relabel_configs"][-len(converted) :]
    assert tail == converted
    targets = {rule["targetLabel"] for rule in relabelings}
    assert {"namespace", "gptoss_deployment", "pod"} <= targets


def test_podmonitor_endpoint_is_valid_for_the_real_crd() -> None:
    schema = _require_crd_schema("podmonitors")
    endpoint = yaml.safe_load(RELABEL_FILE.read_text())
    pod_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "chat", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "chat"}},
            "podMetricsEndpoints": [{**endpoint["endpoint"], "relabelings": endpoint["relabelings"]}],
        },
    }
    _validate(schema, pod_monitor)
    broken = json.loads(json.dumps(pod_monitor))
    broken["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
    with pytest.raises(jsonschema.ValidationError):
        _validate(schema, broken)
    misspelt = json.loads(json.dumps(pod_monitor))
    misspelt["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["target_label"] = "namespace"
    with pytest.raises(jsonschema.ValidationError, match="target_label"):
        _validate(schema, misspelt)


def test_chart_values_carry_the_monitoring_defaults() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["serviceMonitor"] == {"enabled": False, "interval": "30s", "labels": {}}
    assert values["prometheusRule"] == {"enabled": False, "labels": {}}
    assert values["dashboards"] == {
        "enabled": False,
        "namespace": "",
        "labels": {"grafana_dashboard": "1"},
        "annotations": {},
    }


def test_chart_schema_accepts_the_monitoring_defaults() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    values["dashboards"]["labels"] = {"grafana_dashboard": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(values)


def _helm() -> str:
    candidates = sorted(glob.glob(str(CACHE / "bin" / "helm-*" / "helm")))
    found = os.environ.get("HELM") or (candidates[-1] if candidates else None) or shutil.which("helm")
    if not found:
        pytest.skip(f"helm not found under {CACHE}/bin/helm-*/ nor on PATH (the chart tooling builds it)")
    return found


def _render(*sets: str) -> list[dict[str, Any]]:
    args = [_helm(), "template", "gpt", str(CHART_DIR), "--namespace", "gpt-oss-system"]
    for value in sets:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _ours(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] in MONITORING_KINDS
        or (d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"])
        or (d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    ]


def test_monitoring_is_off_by_default() -> None:
    assert [d["kind"] for d in _ours(_render()) if d["kind"] != "Service"] == []


def test_rendered_monitoring_objects() -> None:
    docs = _ours(
        _render(
            "serviceMonitor.enabled=true",
            "serviceMonitor.interval=15s",
            "serviceMonitor.labels.release=kps",
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kps",
            "dashboards.enabled=true",
            "dashboards.annotations.grafana_folder=gpt-oss",
        )
    )
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [
        ("ConfigMap", 2),
        ("PrometheusRule", 1),
        ("Service", 1),
        ("ServiceMonitor", 1),
    ]

    rule = by_kind["PrometheusRule"][0]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    _validate(_require_crd_schema("prometheusrules"), rule)

    monitor = by_kind["ServiceMonitor"][0]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": True}
    ]
    service = by_kind["Service"][0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["name"] == "metrics"
    _validate(_require_crd_schema("servicemonitors"), monitor)

    for config_map in by_kind["ConfigMap"]:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "gpt-oss"}
        ((key, text),) = config_map["data"].items()
        source = DASHBOARDS_DIR / key.removeprefix("gpt-oss-")
        assert json.loads(text) == json.loads(source.read_text())
