"""A real Prometheus scrapes the runtime's metrics and the operator's endpoint, evaluates the rules, and
answers every dashboard query and every recording rule with data.

The inference pods are found the way monitoring/scrape-config.yaml finds them on a cluster: that file's
jobs run unchanged except that Kubernetes service discovery is replaced by static targets carrying the
same `__meta_kubernetes_*` labels (Debian's Prometheus is built without Kubernetes discovery). So the
relabeling that gives series their `namespace` / `gptoss_deployment` labels is exercised for real.
Every test runs against two sources of runtime metrics:
- `reference-triton`: the real `gptoss-runtime serve` (tritonserver, the gpt_oss model, the reference
  engine on CPU, a tiny checkpoint) under a small bounded load (tests/monitoring/triton_runtime_target.py),
  plus the GPU series that only a GPU pod's Triton exports, as a real Triton printed them on an H100
  (tests/monitoring/data/triton-2.51-h100-gpu.prom);
- `simulated-runtime`: two simulated pods (tests/monitoring/fake_runtime_target.py) with realistic,
  non-zero values everywhere (KV cache, waiting requests, errors), so that plausibility can be checked.
The operator target is `gptoss_operator.metrics.start_metrics_server`, fed like a busy operator.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from fake_runtime_target import MODEL, FakeRuntimeTarget
from monitoring_env import DASHBOARDS_DIR, MONITORING_DIR, RULES_FILE
from prometheus_harness import Prometheus, wait_for
from triton_runtime_target import BoundedLoad, ReferenceTriton

from gptoss_operator import metrics
from gptoss_operator.metrics import DeploymentState, OperatorMetrics

pytestmark = pytest.mark.slow

NAMESPACE = "llm"
DEPLOYMENT = "chat"
OPERATOR_NAMESPACE = "gpt-oss-system"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval becomes here (scrape interval 1s)


def _pod_meta(pod: str, component: str, port: int) -> dict[str, str]:
    return {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_label_app_kubernetes_io_instance": DEPLOYMENT,
        "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": "gpt-oss-operator",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
        "__meta_kubernetes_pod_label_gptoss_io_model": MODEL,
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
    }


def _scrape_configs(pod_ports: dict[str, int], operator_port: int) -> list[dict[str, Any]]:
    jobs = {
        job["job_name"]: job
        for job in yaml.safe_load((MONITORING_DIR / "scrape-config.yaml").read_text())["scrape_configs"]
    }
    pods, operator = jobs["gpt-oss-pods"], jobs["gpt-oss-operator"]
    for job in (pods, operator):
        del job["kubernetes_sd_configs"]
        job["scrape_interval"] = "1s"
    # Kubernetes reports the pod IP with the first declared port; the annotation picks the metrics port.
    pod_address = "127.0.0.1:1"
    pods["static_configs"] = [
        {"targets": [pod_address], "labels": _pod_meta(pod, "server", port)} for pod, port in pod_ports.items()
    ]
    some_port = next(iter(pod_ports.values()))
    pods["static_configs"].append(  # not a server pod: dropped by the keep rule
        {"targets": [pod_address], "labels": _pod_meta("chat-weights-abc", "weights", some_port)}
    )
    operator["static_configs"] = [
        {
            "targets": [f"127.0.0.1:{operator_port}"],
            "labels": {
                "namespace": OPERATOR_NAMESPACE,  # what the target gets on a cluster; must not win
                "__meta_kubernetes_pod_label_app_kubernetes_io_name": "gpt-oss-operator",
                "__meta_kubernetes_pod_container_port_name": "metrics",
            },
        }
    ]
    return [pods, operator]


class OperatorActivity:
    """Feeds an OperatorMetrics like a busy operator until stopped."""

    def __init__(self, m: OperatorMetrics) -> None:
        self.m = m
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="operator-activity", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        step = 0
        while not self.stopped.wait(0.2):
            step += 1
            self.m.observe_reconcile(
                "error" if step % 5 == 0 else "success", 0.05 + 0.01 * (step % 7), namespace=NAMESPACE, name=DEPLOYMENT
            )
            self.m.observe_api_request("patch", 200)
            self.m.observe_api_request("get", 404 if step % 9 == 0 else 200)
            direction = ("up", "hold", "down")[step % 3]
            self.m.observe_autoscaler_decision(
                namespace=NAMESPACE, name=DEPLOYMENT, direction=direction, reason="requests_waiting"
            )
            self.m.set_deployment_state(
                DeploymentState(
                    namespace=NAMESPACE,
                    name=DEPLOYMENT,
                    model=MODEL,
                    phase="Ready",
                    desired_replicas=3,
                    ready_replicas=2,
                    gpus=3,
                    capacity_limited=True,
                    weights_ready=True,
                    time_to_first_token_target_seconds=1.5,
                )
            )

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


@dataclass
class Stack:
    source: str
    prometheus: Prometheus
    pods: int  # scrape targets of the pods job
    load: BoundedLoad | None = None  # the requests sent to the real Triton


SIMULATED = "simulated-runtime"
REFERENCE_TRITON = "reference-triton"


def _require_reference_triton() -> None:
    """The real tritonserver comes from the nvidia-pytriton wheel (a dev dependency)."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("nvidia-pytriton is not installed (CI is set: the real Triton must be tested)")
        pytest.skip("nvidia-pytriton is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module", params=[SIMULATED, REFERENCE_TRITON])
def stack(
    request: pytest.FixtureRequest, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Prometheus scraping the operator and either two simulated pods, or a real Triton (reference
    engine, CPU, under load) plus a stand-in for the GPU series that only a GPU pod's Triton exports."""
    with ExitStack() as cleanup:
        if request.param == SIMULATED:
            simulated = FakeRuntimeTarget()
            cleanup.callback(simulated.close)
            pod_ports = {"chat-0": simulated.port, "chat-1": simulated.port}
            load = None
        else:
            _require_reference_triton()
            triton = ReferenceTriton(tmp_path_factory.mktemp("triton"))
            cleanup.callback(triton.stop)
            gpus = FakeRuntimeTarget(gpu_only=True)
            cleanup.callback(gpus.close)
            pod_ports = {"chat-0": triton.metrics_port, "chat-0-gpus": gpus.port}
            load = triton.load
        operator_metrics = OperatorMetrics()
        activity = OperatorActivity(operator_metrics)
        cleanup.callback(activity.stop)
        server = metrics.start_metrics_server(0, operator_metrics.registry, addr="127.0.0.1")
        cleanup.callback(server.server_close)
        cleanup.callback(server.shutdown)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": _scrape_configs(pod_ports, server.server_port),
        }
        prometheus = Prometheus(prometheus_binary, config, tmp_path_factory.mktemp("prometheus"))
        cleanup.callback(prometheus.stop)
        yield Stack(request.param, prometheus, len(pod_ports), load)


def _data(stack: Stack, promql: str) -> list[dict[str, Any]]:
    """Wait (bounded) until `promql` returns at least one sample, and return the samples."""
    return wait_for(f"data for {promql!r}", lambda: stack.prometheus.query(promql) or None, deadline_s=60)


def _all_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _recording_rules() -> list[str]:
    return [rule["record"] for rule in _all_rules() if "record" in rule]


@dataclass(frozen=True)
class DashboardQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref_id}"


def _substitute(expr: str) -> str:
    values = {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "__rate_interval": RATE_INTERVAL}
    result = re.sub(r"\$\{?(\w+)\}?", lambda match: values[match.group(1)], expr)
    assert "$" not in result
    return result


def _dashboard_queries() -> list[DashboardQuery]:
    queries = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append(DashboardQuery(path.stem, panel["title"], target["refId"], _substitute(target["expr"])))
    return queries


def test_pods_and_operator_are_scraped_with_the_deployment_labels(stack: Stack) -> None:
    def scraped() -> list[dict[str, Any]] | None:
        active = stack.prometheus.api("targets", state="active")["activeTargets"]
        up = [t for t in active if t["health"] == "up"]
        return up if len(up) == stack.pods + 1 else None

    up = wait_for("every target healthy", scraped)
    pods = [t["labels"] for t in up if t["labels"]["job"] == "gpt-oss-pods"]
    assert len(pods) == stack.pods
    assert all(p["pod"].startswith("chat-0") or p["pod"] == "chat-1" for p in pods)  # not the weights pod
    for labels in pods:
        assert labels["namespace"] == NAMESPACE
        assert labels["gptoss_deployment"] == DEPLOYMENT
        assert labels["gptoss_model"] == MODEL
        assert labels["instance"] != "127.0.0.1:1"  # the port comes from the prometheus.io/port annotation


def test_the_real_server_answers_the_load(stack: Stack) -> None:
    if stack.load is None:
        pytest.skip("no load in the simulated source")
    load = stack.load
    total = _data(stack, f'sum(gptoss_requests_total{{gptoss_deployment="{DEPLOYMENT}",outcome="success"}})')
    assert float(total[0]["value"][1]) > 0
    with load.lock:
        assert load.errors == []
        assert load.completed > 0


def test_operator_series_keep_the_deployment_namespace(stack: Stack) -> None:
    samples = _data(stack, "gptoss_operator_desired_replicas")
    assert {s["metric"]["namespace"] for s in samples} == {NAMESPACE}
    recorded = _data(stack, "gptoss_deployment:gptoss_operator_desired_replicas:max")
    assert recorded[0]["metric"] == {
        "__name__": "gptoss_deployment:gptoss_operator_desired_replicas:max",
        "namespace": NAMESPACE,
        "gptoss_deployment": DEPLOYMENT,
        "model": MODEL,
    }
    assert float(recorded[0]["value"][1]) == 3


@pytest.mark.parametrize("record", _recording_rules())
def test_every_recording_rule_returns_data(stack: Stack, record: str) -> None:
    samples = _data(stack, record)
    for sample in samples:
        if record.startswith("gptoss_deployment:"):
            assert sample["metric"]["namespace"] == NAMESPACE
            assert sample["metric"]["gptoss_deployment"] == DEPLOYMENT


def test_rules_evaluate_without_errors(stack: Stack) -> None:
    _data(stack, "gptoss_deployment:gptoss_time_to_first_token_seconds:p99")
    groups = stack.prometheus.api("rules")["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert unhealthy == []
    assert sum(len(g["rules"]) for g in groups) == len(_all_rules())


def test_rates_and_percentiles_are_plausible(stack: Stack) -> None:
    def positive(promql: str) -> float:
        def probe() -> float | None:
            samples = stack.prometheus.query(promql)
            value = float(samples[0]["value"][1]) if samples else math.nan
            return value if value > 0 else None

        return wait_for(f"a positive value for {promql}", probe)

    # rate1m is still ramping up while its window holds less than a minute of data: bounds are loose.
    assert 0 < positive("gptoss_deployment:gptoss_requests:rate1m") < 40
    assert positive("gptoss_deployment:gptoss_generated_tokens:rate1m") > 0
    assert 0 < positive("gptoss_deployment:gptoss_time_to_first_token_seconds:p50") < 16
    assert 0 < positive("gptoss_deployment:nv_inference_request_duration_seconds:mean5m") < 60
    assert positive("gptoss_deployment:gptoss_operator_replicas_unavailable:max") == 1
    for ratio in ("gptoss_kv_cache_utilization_ratio:max", "nv_gpu_utilization:avg"):
        value = float(_data(stack, f"gptoss_deployment:{ratio}")[0]["value"][1])
        assert 0 <= value <= 1, ratio
    memory = _data(stack, "gptoss_deployment:nv_gpu_memory_total_bytes:sum")
    assert float(memory[0]["value"][1]) >= 85_520_809_984  # at least one H100 80GB
    if stack.source == SIMULATED:
        # Each scrape of either pod finishes 4 requests: about 8 per second per pod, 16 in all; fewer when the
        # machine is busy and scrapes fall behind (2.96, twice, right after a fleet bench while its pods went).
        assert 1 < positive(f'sum(rate(gptoss_requests_total{{gptoss_deployment="{DEPLOYMENT}"}}[5s]))') < 40
        assert 0.05 < positive("gptoss_deployment:gptoss_time_to_first_token_seconds:p50") < 0.5
        assert 0 < positive("gptoss_deployment:nv_gpu_utilization:avg") <= 1


@pytest.mark.parametrize("query", _dashboard_queries(), ids=str)
def test_every_dashboard_query_returns_data(stack: Stack, query: DashboardQuery) -> None:
    _data(stack, query.expr)


def test_dashboard_variables_find_the_namespace_and_deployment(stack: Stack) -> None:
    _data(stack, "gptoss_operator_desired_replicas")
    for path in DASHBOARDS_DIR.glob("*.json"):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert match, f"{path.name}: variable {variable['name']} must use label_values(selector, label)"
            selector, label = _substitute(match.group(1)), match.group(2)
            values = stack.prometheus.api(f"label/{label}/values", **{"match[]": selector})
            assert {NAMESPACE, DEPLOYMENT} & set(values), f"{variable['name']}: {values}"


def test_weights_pod_is_dropped_and_no_other_job_exists(stack: Stack) -> None:
    dropped = stack.prometheus.api("targets", state="dropped")["droppedTargets"]
    assert any(
        t["discoveredLabels"].get("__meta_kubernetes_pod_label_app_kubernetes_io_component") == "weights"
        for t in dropped
    )
