"""`make demo` end to end on the session cluster: its output tells the truth, and a second run reuses it.

The demo runs as a user runs it (e2e/demo.py, a subprocess) against the session's kubeconfig; the checks
read the cluster independently with the real kubectl. When the demo was not set up before the test, the
test removes it afterwards (`demo.py down`), so that the GPUs it takes do not linger for other tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import demo
import pytest
from conftest import Kubectl
from operator_process import DetachedOperator

pytestmark = pytest.mark.cluster

DEMO_SCRIPT = Path(demo.__file__)
DEMO_TIMEOUT_S = 300


def run_demo(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO_SCRIPT), *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S + 240,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_output(kubeconfig: Path, kubectl: Kubectl) -> Iterator[str]:
    """The output of `demo.py up`; the demo is removed afterwards unless it was there before."""
    already_there = kubectl.run("get", "namespace", demo.DEMO_NAMESPACE, check=False).returncode == 0
    result = run_demo(kubeconfig, "up", "--timeout", str(DEMO_TIMEOUT_S))
    output = result.stdout + result.stderr
    try:
        assert result.returncode == 0, f"demo.py up exited {result.returncode}:\n{output}"
        yield output
    finally:
        if not already_there:
            down = run_demo(kubeconfig, "down")
            print(down.stdout, down.stderr)


def demo_crs(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    items = kubectl.json("get", "gptoss", "--namespace", demo.DEMO_NAMESPACE)["items"]
    return {cr["metadata"]["name"]: cr for cr in items}


def test_every_sample_is_ready_in_the_cluster_and_in_the_output(demo_output: str, kubectl: Kubectl) -> None:
    names = demo.sample_names()
    assert len(names) == 4
    crs = demo_crs(kubectl)
    for name in names:
        assert demo.is_ready(crs[name]), json.dumps(crs[name].get("status"), indent=2)
        # `kubectl get gptoss -o wide` row of the sample shows it Ready
        assert re.search(rf"^{re.escape(name)}\s.*\bReady\b", demo_output, re.MULTILINE), demo_output
        assert f"{name:<28} Ready after" in demo_output
        assert crs[name]["status"]["endpoints"]["openai"] in demo_output


def test_output_says_the_nodes_are_simulated_and_how_to_tear_down(demo_output: str) -> None:
    assert demo.SIMULATED_NOTE in demo_output
    assert "make cluster-down" in demo_output
    assert "gptoss-runtime serve --weights /tmp/tiny --engine reference" in demo_output


def test_operator_runs_as_the_charts_service_account_with_the_charts_rbac(demo_output: str, kubectl: Kubectl) -> None:
    account = f"system:serviceaccount:{demo.RELEASE_NAMESPACE}:{demo.SERVICE_ACCOUNT}"
    assert f"identity: {account}" in demo_output
    state = DetachedOperator(demo.DEMO_DIR).state()
    assert state is not None and state.username == account
    # The identity is bounded by the chart: it manages the demo namespace and cannot read secrets.
    can_i = {
        ("patch", "gptossdeployments/status", demo.DEMO_NAMESPACE): "yes",
        ("get", "secrets", demo.DEMO_NAMESPACE): "no",
        ("create", "deployments", "default"): "no",
    }
    for (verb, resource, namespace), expected in can_i.items():
        answer = kubectl.run("auth", "can-i", verb, resource, "--namespace", namespace, "--as", account, check=False)
        assert answer.stdout.strip() == expected, (verb, resource, namespace)
    log = DetachedOperator(demo.DEMO_DIR).logs_since_start()
    assert "Forbidden" not in log, log  # 403s are logged by Kopf and the operator alike


def test_charts_operator_deployment_is_held_at_zero_by_the_replicas_value(demo_output: str, kubectl: Kubectl) -> None:
    deployment = kubectl.json("get", "deployment", demo.RELEASE, "--namespace", demo.RELEASE_NAMESPACE)
    assert deployment["spec"]["replicas"] == 0
    values = json.loads(
        subprocess.run(
            [str(demo.helm_binary(build=False)), "--kubeconfig", str(kubectl.kubeconfig), "get", "values",
             demo.RELEASE, "--namespace", demo.RELEASE_NAMESPACE, "-o", "json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    assert values["replicas"] == 0  # set through the chart, so a `helm upgrade` keeps it at 0


def test_two_gpu_replicas_share_one_node_with_enough_gpus(demo_output: str, kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    pods = [p for p in kubectl.json("get", "pods", "--namespace", demo.DEMO_NAMESPACE)["items"] if demo.gpu_count(p)]
    two_gpu = [p for p in pods if demo.gpu_count(p) == 2]
    assert two_gpu, "the 2-GPU samples have no pods"
    for pod in two_gpu:
        node = nodes[pod["spec"]["nodeName"]]
        assert int(node["status"]["allocatable"][demo.GPU_RESOURCE]) == 8
        row = re.search(
            rf"^\s+{re.escape(pod['metadata']['name'])}\s+2\s+{pod['spec']['nodeName']}\s+8\s", demo_output, re.M
        )
        assert row, demo_output


def test_a_second_run_reuses_the_cluster_release_and_operator(demo_output: str, kubeconfig: Path) -> None:
    first = DetachedOperator(demo.DEMO_DIR).state()
    again = run_demo(kubeconfig, "up", "--timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    assert first is not None
    assert f"reusing the running operator (pid {first.pid};" in again.stdout
    assert "unchanged" in again.stdout  # kubectl apply of the samples changed nothing


# ------------------------------------------------------------------------------------- no cluster needed
def test_plan_summary_names_parallelism_and_kv_budget() -> None:
    plan = {
        "gpusPerReplica": 2,
        "gpuProduct": "NVIDIA-H100-80GB-HBM3",
        "engine": {"tensorParallelSize": 2, "moeExpertParallelSize": 2, "moeBackend": "TRITON", "maxSeqLen": 65536},
        "kvBudget": {"kvCacheGib": 73.04, "kvCacheTokens": 2125565, "maxConcurrentSequences": 32},
    }
    first, second = demo.plan_lines(plan)
    assert first.startswith("2x NVIDIA-H100-80GB-HBM3 per replica, TP2/EP2, MoE backend TRITON, maxSeqLen 65536")
    assert "KV cache 73.0 GiB" in second and "2,125,565 tokens" in second and "32 sequences" in second


def test_ready_needs_the_current_generation() -> None:
    cr: dict[str, Any] = {
        "metadata": {"generation": 2},
        "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]},
    }
    assert not demo.is_ready(cr)
    cr["status"]["conditions"][0]["observedGeneration"] = 2
    assert demo.is_ready(cr)
