"""`make demo` end to end on the session cluster: real pods answer, its output tells the truth, a rerun reuses it.

The demo runs as a user runs it (e2e/demo.py, a subprocess) against the session's kubeconfig; the checks
read the cluster independently with the real kubectl. When the demo was not set up before the test, the
test removes it afterwards (`demo.py down`), so that the GPUs it takes do not linger for other tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import demo
import pytest
import realpods
from conftest import Kubectl

# Image builds (cached by content) and pod starts on a busy 2-core machine take minutes, not seconds.
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

DEMO_SCRIPT = Path(demo.__file__)
DEMO_TIMEOUT_S = 900
OPERATOR_SELECTOR = "app.kubernetes.io/name=gpt-oss-operator"


def run_demo(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO_SCRIPT), *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S + 1800,  # a cold image build is part of the first run
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


def operator_pods(kubectl: Kubectl) -> list[dict[str, Any]]:
    pods = kubectl.json("get", "pods", "--namespace", demo.RELEASE_NAMESPACE, "-l", OPERATOR_SELECTOR)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


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


def test_a_container_produced_the_streamed_answer(demo_output: str, kubectl: Kubectl) -> None:
    assert "answer (final channel):" in demo_output
    assert re.search(r"time to first token \d+ ms", demo_output), demo_output
    selector = f"app.kubernetes.io/component=server,gptoss.io/deployment={demo.ANSWER_SAMPLE}"
    pods = kubectl.json("get", "pods", "--namespace", demo.DEMO_NAMESPACE, "-l", selector)["items"]
    served = 0.0
    for pod in pods:
        url = f"http://{pod['status']['podIP']}:{realpods.METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:  # the pod IP is on this machine's bridge
            for line in response.read().decode().splitlines():
                if line.startswith("nv_inference_request_success"):
                    served += float(line.rsplit(" ", 1)[1])
    assert served >= 1, "no server pod of the sample counted a successful inference"


def test_output_says_what_is_real_and_simulated_and_how_to_tear_down(demo_output: str) -> None:
    assert demo.SIMULATED_NOTE in demo_output
    assert demo.REAL_NOTE in demo_output
    assert "make cluster-down" in demo_output
    assert "real (kubelet + containerd)" in demo_output


def test_the_operator_runs_as_a_pod_with_the_charts_rbac(demo_output: str, kubectl: Kubectl) -> None:
    pods = operator_pods(kubectl)
    assert pods, "no operator pod"
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == demo.SERVICE_ACCOUNT
        assert pod["status"]["phase"] == "Running"
        assert f"pod {pod['metadata']['name']} on node" in demo_output
    account = f"system:serviceaccount:{demo.RELEASE_NAMESPACE}:{demo.SERVICE_ACCOUNT}"
    # The identity is bounded by the chart: it manages the demo namespace and cannot list secrets (it may GET
    # one, asking for metadata only, to check a token Secret's mark: docs/security.md).
    can_i = {
        ("patch", "gptossdeployments/status", demo.DEMO_NAMESPACE): "yes",
        ("list", "secrets", demo.DEMO_NAMESPACE): "no",
        ("create", "deployments", "default"): "no",
    }
    for (verb, resource, namespace), expected in can_i.items():
        answer = kubectl.run("auth", "can-i", verb, resource, "--namespace", namespace, "--as", account, check=False)
        assert answer.stdout.strip() == expected, (verb, resource, namespace)
    logs = kubectl.run(
        "logs", "--namespace", demo.RELEASE_NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=-1", check=False
    ).stdout
    assert "Forbidden" not in logs, logs[-4000:]  # 403s are logged by Kopf and the operator alike


def test_two_gpu_replicas_share_one_node_with_enough_gpus(demo_output: str, kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    pods = [p for p in kubectl.json("get", "pods", "--namespace", demo.DEMO_NAMESPACE)["items"] if demo.gpu_count(p)]
    two_gpu = [p for p in pods if demo.gpu_count(p) == 2]
    assert two_gpu, "the 2-GPU samples have no pods"
    for pod in two_gpu:
        node = nodes[pod["spec"]["nodeName"]]
        assert int(node["status"]["allocatable"][demo.GPU_RESOURCE]) >= 2
        assert re.search(
            rf"^\s+{re.escape(pod['metadata']['name'])}\s+2\s+{pod['spec']['nodeName']}\s", demo_output, re.M
        )


def test_a_second_run_reuses_the_cluster_release_and_pods(demo_output: str, kubeconfig: Path, kubectl: Kubectl) -> None:
    before = {p["metadata"]["uid"] for p in operator_pods(kubectl)}
    servers = {p["metadata"]["uid"] for p in kubectl.json("get", "pods", "-n", demo.DEMO_NAMESPACE)["items"]}
    again = run_demo(kubeconfig, "up", "--timeout", "300")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "unchanged" in again.stdout  # kubectl apply of the samples changed nothing
    assert {p["metadata"]["uid"] for p in operator_pods(kubectl)} == before  # no operator restart
    after = {p["metadata"]["uid"] for p in kubectl.json("get", "pods", "-n", demo.DEMO_NAMESPACE)["items"]}
    assert servers <= after  # no model server restarted


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
