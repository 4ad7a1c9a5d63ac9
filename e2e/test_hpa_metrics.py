"""The custom-metrics pipeline of autoscaling.mode hpa, for real (e2e/metrics).

Pods on the real node export the runtime's `gptoss_*` gauges under the operator's prometheus.io/*
annotations; Debian's Prometheus finds them with the project's own scrape config
(monitoring/scrape-config.yaml); Prometheus Adapter, built from its Go module, serves them with the rules
the chart renders; the API server aggregates custom.metrics.k8s.io; and the controller manager's real
HPA controller, given the HorizontalPodAutoscaler the operator renders for mode hpa, reads the values and
scales. The stand-in exporters are plain Deployments with a server pod's labels so that the HPA has a
scale target without the operator (the operator's own HPA targets the GptOssDeployment's scale
subresource; the metrics path is the same).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import realpods
import yaml
from conftest import Kubectl, wait_until

from gptoss_operator.builders.deployment import PROMETHEUS_ANNOTATIONS
from gptoss_runtime import contract

# The first test's setup may build the images and the adapter (minutes, cold); each wait has its own deadline.
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLE: Final = REPO / "manifests" / "samples" / "gpt-oss-120b-autoscaling.yaml"
NAMESPACE: Final = "e2e-hpa-metrics"
EXPORTER: Final = "gpt-oss-hpa-stand-in"
# Per pod; the sample's HPA targets 4 requests waiting per replica, so 6 asks for more replicas.
REQUESTS_WAITING: Final = 6
KV_CACHE_UTILIZATION: Final = 0.25
GAUGES: Final = " ".join(
    f"{name}={value}"
    for name, value in (
        (contract.METRIC_REQUESTS_WAITING, REQUESTS_WAITING),
        (contract.METRIC_KV_CACHE_UTILIZATION, KV_CACHE_UTILIZATION),
    )
)
# Scrape (5 s) + the adapter's relist (10 s) + the HPA's sync period (15 s), on a busy 2-core machine.
METRICS_TIMEOUT_S: Final = 180
POD_READY_TIMEOUT_S: Final = 300

# A metrics endpoint like the runtime's: fixed gauges (GAUGES="name=value ...") in Prometheus' text
# format on PORT.
EXPORTER_SCRIPT: Final = """
import http.server, os
gauges = [pair.split("=") for pair in os.environ["GAUGES"].split()]
BODY = "".join(f"# TYPE {name} gauge\\n{name} {value}\\n" for name, value in gauges).encode()
class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(BODY if self.path == "/metrics" else b"")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Metrics).serve_forever()
"""


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=3000, check=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def exporter_deployment(image: str) -> dict[str, Any]:
    """Stand-in server pods: the labels and annotations the operator puts on server pods, on the real node."""
    labels = {
        "app.kubernetes.io/name": "gpt-oss",
        "app.kubernetes.io/instance": EXPORTER,
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": "gpt-oss-operator",
        "gptoss.io/model": "gpt-oss-120b",
    }
    container = {
        "name": "metrics",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", EXPORTER_SCRIPT],
        "env": [
            {"name": "GAUGES", "value": GAUGES},
            {"name": "PORT", "value": str(contract.METRICS_PORT)},
        ],
        "ports": [{"name": "metrics", "containerPort": contract.METRICS_PORT}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": {realpods.REAL_NODE_LABEL: "true"},
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": EXPORTER, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": EXPORTER}},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(PROMETHEUS_ANNOTATIONS)},
                "spec": pod_spec,
            },
        },
    }


def operator_hpa() -> dict[str, Any]:
    """The HPA the operator renders for the autoscaling sample in mode hpa, aimed at the stand-in pods."""
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["spec"]["autoscaling"]["mode"] = "hpa"
    rendered = subprocess.run(
        [str(Path(sys.executable).parent / "gptoss-operator"), "render", "-f", "-"],
        input=yaml.safe_dump(sample),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    hpas = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpas) == 1, f"the operator rendered {len(hpas)} HorizontalPodAutoscalers for mode hpa"
    hpa: dict[str, Any] = hpas[0]
    hpa["metadata"] = {"name": EXPORTER, "namespace": NAMESPACE, "labels": hpa["metadata"]["labels"]}
    hpa["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": EXPORTER}
    return hpa


@pytest.fixture(scope="module")
def stand_in(kubectl: Kubectl) -> Iterator[Kubectl]:
    """The pipeline up, and one stand-in server pod Ready on the real node; all removed afterwards."""
    if not kubectl.json("get", "nodes", "-l", f"{realpods.REAL_NODE_LABEL}=true")["items"]:
        pytest.fail("the cluster has no real node (label gptoss.dev/real-node=true): e2e/cluster/up.sh starts it")
    images = realpods.ensure_images(lambda argv, what: _run(list(argv), what))
    pipeline = realpods.metrics_pipeline()
    pipeline.ensure_up()
    ns = kubectl.in_namespace(NAMESPACE)
    try:
        kubectl.apply(realpods.restricted_namespace(NAMESPACE))
        kubectl.wait("serviceaccount/default", "create", 60, "--namespace", NAMESPACE)
        kubectl.apply(exporter_deployment(images.runtime_cpu))
        ns.rollout_status(EXPORTER, timeout_s=POD_READY_TIMEOUT_S)
        yield ns
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
        pipeline.ensure_down()


def _custom_metric(kubectl: Kubectl, metric: str) -> list[dict[str, Any]]:
    raw = kubectl("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/pods/*/{metric}")
    items: list[dict[str, Any]] = json.loads(raw)["items"]
    return items


def _has_values(kubectl: Kubectl, metric: str) -> bool:
    try:
        return bool(_custom_metric(kubectl, metric))
    except Exception:  # the adapter serves a series only after Prometheus scraped it and it relisted
        return False


def test_custom_metrics_api_serves_the_pods_gauges(kubectl: Kubectl, stand_in: Kubectl) -> None:
    wait_until(
        lambda: _has_values(kubectl, contract.METRIC_REQUESTS_WAITING),
        timeout_s=METRICS_TIMEOUT_S,
        interval_s=2,
        what=f"custom.metrics.k8s.io to serve {contract.METRIC_REQUESTS_WAITING} of {NAMESPACE}'s pods",
    )
    pods = {
        pod["metadata"]["name"]
        for pod in stand_in.json("get", "pods", "-l", f"app.kubernetes.io/instance={EXPORTER}")["items"]
    }
    waiting = _custom_metric(kubectl, contract.METRIC_REQUESTS_WAITING)
    assert {item["describedObject"]["name"] for item in waiting} <= pods
    assert {item["value"] for item in waiting} == {str(REQUESTS_WAITING)}
    assert all(item["describedObject"]["kind"] == "Pod" for item in waiting)
    wait_until(
        lambda: _has_values(kubectl, contract.METRIC_KV_CACHE_UTILIZATION),
        timeout_s=METRICS_TIMEOUT_S,
        interval_s=2,
        what=f"custom.metrics.k8s.io to serve {contract.METRIC_KV_CACHE_UTILIZATION}",
    )
    # Quantities: 0.25 is served as 250m.
    assert {item["value"] for item in _custom_metric(kubectl, contract.METRIC_KV_CACHE_UTILIZATION)} == {"250m"}


def _hpa(ns: Kubectl) -> dict[str, Any]:
    hpa: dict[str, Any] = ns.json("get", "hpa", EXPORTER)
    return hpa


def _condition(hpa: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in hpa.get("status", {}).get("conditions") or []:
        if condition["type"] == kind:
            found: dict[str, Any] = condition
            return found
    return {}


def _current_waiting(hpa: dict[str, Any]) -> str | None:
    for metric in hpa.get("status", {}).get("currentMetrics") or []:
        pods = metric.get("pods") or {}
        if pods.get("metric", {}).get("name") == contract.METRIC_REQUESTS_WAITING:
            value: str | None = pods.get("current", {}).get("averageValue")
            return value
    return None


def test_the_real_hpa_controller_scales_on_the_operators_hpa(stand_in: Kubectl) -> None:
    stand_in.apply(operator_hpa())
    wait_until(
        lambda: (
            _condition(_hpa(stand_in), "ScalingActive").get("status") == "True"
            and _current_waiting(_hpa(stand_in)) is not None
        ),
        timeout_s=METRICS_TIMEOUT_S,
        interval_s=2,
        what="the HPA to read its Pods metrics (ScalingActive=True with a current value)",
    )
    hpa = _hpa(stand_in)
    assert _current_waiting(hpa) == str(REQUESTS_WAITING), hpa["status"]
    # 6 waiting per replica against a target of 4: the controller asks for more replicas and the
    # Deployment gets them.
    wait_until(
        lambda: int(stand_in.json("get", "deployment", EXPORTER)["spec"]["replicas"]) > 1,
        timeout_s=METRICS_TIMEOUT_S,
        interval_s=2,
        what=f"the HPA to scale {EXPORTER} above 1 replica",
    )
    assert _hpa(stand_in)["status"]["desiredReplicas"] > 1
