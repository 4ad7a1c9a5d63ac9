"""The reconcile loop on the real control plane: kubectl apply -> Ready, scale, drift, GC, crash, capacity.

Each test starts its own operator process (watching only the test's namespace) against the kubeconfig
and drives it with the real kubectl. Nodes are kwok's simulated GPU nodes; pods become Running and Ready
without containers. There is no storage provisioner, so `volumes` binds each weights cache claim to a
static PersistentVolume as a provisioner would. Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl, wait_until
from operator_process import (
    RESYNC_SECONDS,
    SAMPLES,
    OperatorProcess,
    Volumes,
    condition,
    get_cr,
    load_sample,
    wait_for_condition,
)

pytestmark = pytest.mark.cluster

OWNER_LABEL = "gptoss.io/deployment"
GPU = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
CHILD_KINDS = "deployments,services,configmaps,persistentvolumeclaims,jobs,poddisruptionbudgets,networkpolicies"
WRITE_VERBS = ("apply", "patch", "create", "delete")


# ------------------------------------------------------------------------------------------ fixtures
# ------------------------------------------------------------------------------------------- helpers
def children(kubectl_ns: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl_ns.json("get", CHILD_KINDS, "-l", f"{OWNER_LABEL}={name}")["items"])


def pods_of(kubectl_ns: Kubectl, cr: dict[str, Any]) -> list[dict[str, Any]]:
    selector = cr["status"]["selector"]
    return [
        p for p in kubectl_ns.json("get", "pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")
    ]


def rendered_children(cr: dict[str, Any], namespace: str) -> set[tuple[str, str]]:
    """(kind, name) of the children `gptoss-operator render` builds for `cr` offline."""
    document = {**cr, "metadata": {**cr["metadata"], "namespace": namespace}}
    result = subprocess.run(
        [sys.executable, "-m", "gptoss_operator.cli", "render", "-f", "-"],
        input=yaml.safe_dump(document),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d}


def gpu_request(pod: dict[str, Any]) -> int:
    total = 0
    for container in pod["spec"]["containers"]:
        resources = container.get("resources", {})
        total += int(resources.get("limits", {}).get(GPU, resources.get("requests", {}).get(GPU, 0)))
    return total


def resource_versions(kubectl_ns: Kubectl, name: str) -> dict[str, str]:
    versions = {
        f"{c['kind']}/{c['metadata']['name']}": c["metadata"]["resourceVersion"] for c in children(kubectl_ns, name)
    }
    versions["cr"] = get_cr(kubectl_ns, name)["metadata"]["resourceVersion"]
    return versions


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    wait_until(predicate, timeout_s=timeout_s, interval_s=0.5, what=what)


# --------------------------------------------------------------------------------------------- tests
def test_samples_become_ready_on_nodes_with_enough_gpus(
    kubectl: Kubectl, kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    kubectl_ns("apply", "-f", str(SAMPLES))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in sorted(SAMPLES.glob("*.yaml"))]
    for name in names:
        cr = wait_for_condition(kubectl_ns, name, "Ready", "True", volumes=volumes, operator=operator)
        assert cr["status"]["phase"] == "Ready"
        assert cr["status"]["readyReplicas"] == cr["spec"]["replicas"]
        assert cr["status"]["endpoints"]["openai"].startswith(f"http://{name}.")

    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    used: dict[str, int] = {}
    for name in names:
        cr = get_cr(kubectl_ns, name)
        pods = pods_of(kubectl_ns, cr)
        assert len(pods) == cr["spec"]["replicas"]
        for pod in pods:
            node = nodes[pod["spec"]["nodeName"]]
            gpus = gpu_request(pod)
            assert gpus == cr["status"]["gpusPerReplica"]
            assert node["metadata"]["labels"].get(PRODUCT_LABEL) == cr["spec"]["gpu"]["product"]
            assert int(node["status"]["allocatable"][GPU]) >= gpus  # a 2-GPU replica sits on one node with 2+
            used[node["metadata"]["name"]] = used.get(node["metadata"]["name"], 0) + gpus
    all_pods = kubectl.json("get", "pods", "--all-namespaces", "--field-selector", "status.phase=Running")["items"]
    for node_name in used:
        held = sum(gpu_request(p) for p in all_pods if p["spec"].get("nodeName") == node_name)
        assert held <= int(nodes[node_name]["status"]["allocatable"][GPU]), f"{node_name} over-committed"

    table = kubectl_ns("get", "gptoss")
    assert "Ready" in table


def test_scale_subresource_drives_replicas(kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes) -> None:
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)

    kubectl_ns("scale", "gptoss/gpt-oss-20b", "--replicas=3")
    cr = wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
    assert cr["status"]["readyReplicas"] == 3
    assert cr["status"]["gpus"] == 3
    assert kubectl_ns.json("get", "deployment", "gpt-oss-20b")["spec"]["replicas"] == 3
    scale = json.loads(kubectl_ns.run("get", "--raw", _scale_path(kubectl_ns, "gpt-oss-20b"), namespaced=False).stdout)
    assert scale["status"]["replicas"] == 3


def _scale_path(kubectl_ns: Kubectl, name: str) -> str:
    return f"/apis/gptoss.io/v1alpha1/namespaces/{kubectl_ns.namespace}/gptossdeployments/{name}/scale"


def test_deleted_child_is_recreated(kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes) -> None:
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
    before = {f"{c['kind']}/{c['metadata']['name']}": c["metadata"]["uid"] for c in children(kubectl_ns, "gpt-oss-20b")}

    plan_config_map = next(name for name in before if name.startswith("ConfigMap/gpt-oss-20b-plan-")).lower()
    kubectl_ns("delete", "deployment/gpt-oss-20b", "service/gpt-oss-20b", plan_config_map, "--wait=true")

    def recreated() -> bool:
        now = {
            f"{c['kind']}/{c['metadata']['name']}": c["metadata"]["uid"] for c in children(kubectl_ns, "gpt-oss-20b")
        }
        return set(now) == set(before) and now["Deployment/gpt-oss-20b"] != before["Deployment/gpt-oss-20b"]

    wait_for(recreated, "the deleted Deployment, Service and ConfigMap to come back", timeout_s=30)
    wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)


def test_hand_edit_of_an_owned_field_is_reverted(
    kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
    service = kubectl_ns.json("get", "service", "gpt-oss-20b")
    original_ports = service["spec"]["ports"]

    kubectl_ns("scale", "deployment/gpt-oss-20b", "--replicas=4")
    kubectl_ns("patch", "service", "gpt-oss-20b", "--type=json", "-p", '[{"op":"remove","path":"/spec/ports/0"}]')

    wait_for(
        lambda: kubectl_ns.json("get", "deployment", "gpt-oss-20b")["spec"]["replicas"] == 1,
        "the operator to put the Deployment back to 1 replica",
        timeout_s=30,
    )
    wait_for(
        lambda: kubectl_ns.json("get", "service", "gpt-oss-20b")["spec"]["ports"] == original_ports,
        "the operator to restore the Service ports",
        timeout_s=30,
    )


def test_deleting_the_cr_garbage_collects_every_child(
    kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
    assert children(kubectl_ns, "gpt-oss-20b")
    assert kubectl_ns.json("get", "gptoss", "gpt-oss-20b")["metadata"].get("finalizers") in (None, [])

    kubectl_ns("delete", "gptoss", "gpt-oss-20b", "--wait=true", timeout=60)
    wait_for(lambda: children(kubectl_ns, "gpt-oss-20b") == [], "the garbage collector to remove every child", 120)
    wait_for(lambda: kubectl_ns.json("get", "pods")["items"] == [], "the server pods to go", 120)


def test_deleting_the_cr_while_the_operator_is_down_does_not_hang(
    kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
    operator.stop()
    kubectl_ns("delete", "gptoss", "gpt-oss-20b", "--wait=true", timeout=60)
    wait_for(lambda: children(kubectl_ns, "gpt-oss-20b") == [], "the garbage collector to remove every child", 120)


def test_operator_killed_mid_reconcile_leaves_no_duplicate_or_orphan(
    kubeconfig: Path, kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes, tmp_path: Path
) -> None:
    cr = load_sample("gpt-oss-120b-2xh100.yaml")
    kubectl_ns.apply(cr)
    wait_for(lambda: len(children(kubectl_ns, cr["metadata"]["name"])) > 0, "the first child to appear", 60)
    operator.kill()  # SIGKILL somewhere inside the first reconcile

    with OperatorProcess(kubeconfig, [kubectl_ns.namespace or ""], tmp_path / "restarted.log") as restarted:
        live_cr = wait_for_condition(
            kubectl_ns, cr["metadata"]["name"], "Ready", "True", volumes=volumes, operator=restarted
        )
        found = children(kubectl_ns, cr["metadata"]["name"])
        keys = [(c["kind"], c["metadata"]["name"]) for c in found]
        assert len(keys) == len(set(keys)), f"duplicated children: {keys}"
        assert set(keys) == rendered_children(cr, kubectl_ns.namespace or "")
        for child in found:
            owners = [o for o in child["metadata"].get("ownerReferences", []) if o.get("controller")]
            assert [o["uid"] for o in owners] == [live_cr["metadata"]["uid"]], f"{keys} has owners {owners}"
        assert len(kubectl_ns.json("get", "replicasets")["items"]) == 1


def test_too_many_gpus_reports_capacity_and_recovers(
    kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    name = "gpt-oss-120b-2xh100"
    kubectl_ns.apply(load_sample("gpt-oss-120b-2xh100.yaml", replicas=12))  # 24 GPUs > the cluster's 18
    cr = wait_for_condition(
        kubectl_ns, name, "CapacityAvailable", "False", volumes=volumes, operator=operator, timeout_s=60
    )
    assert condition(cr, "CapacityAvailable")["reason"] == "InsufficientGPUs"
    assert "spec.replicas=12" in condition(cr, "CapacityAvailable")["message"]
    assert condition(cr, "Ready")["status"] == "False"
    events = kubectl_ns.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    assert any(e["reason"] == "InsufficientCapacity" and e["type"] == "Warning" for e in events), events

    kubectl_ns("scale", f"gptoss/{name}", "--replicas=1")
    wait_for_condition(kubectl_ns, name, "CapacityAvailable", "True", volumes=volumes, operator=operator, timeout_s=90)
    wait_for_condition(kubectl_ns, name, "Ready", "True", volumes=volumes, operator=operator)


def test_spec_the_planner_rejects_is_invalid_and_touches_nothing(
    kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    name = "gpt-oss-20b"
    unknown_gpu = load_sample("gpt-oss-20b.yaml", gpu={"product": "NVIDIA-T4", "count": 1})
    kubectl_ns.apply(unknown_gpu)  # passes the CRD schema; only the planner knows the product
    cr = wait_for_condition(kubectl_ns, name, "Ready", "False", reason="InvalidSpec", operator=operator, timeout_s=60)
    assert "gpu.product" in condition(cr, "Ready")["message"]
    assert cr["status"]["phase"] == "Failed"
    assert children(kubectl_ns, name) == []
    events = kubectl_ns.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    assert any(e["reason"] == "InvalidSpec" for e in events)

    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))  # fixed
    wait_for_condition(kubectl_ns, name, "Ready", "True", volumes=volumes, operator=operator)


def test_a_resync_with_nothing_changed_writes_nothing(
    kubectl_ns: Kubectl, operator: OperatorProcess, volumes: Volumes
) -> None:
    name = "gpt-oss-20b"
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    wait_for_condition(kubectl_ns, name, "Ready", "True", volumes=volumes, operator=operator)

    def settled() -> bool:  # the last status updates of the controllers (pods, Job) are behind us
        before = resource_versions(kubectl_ns, name)
        count = _reconciles(operator)
        wait_for(lambda: _reconciles(operator) > count, "one more resync", timeout_s=30)
        return resource_versions(kubectl_ns, name) == before

    wait_for(settled, "the deployment to settle", timeout_s=90)
    baseline_versions = resource_versions(kubectl_ns, name)
    baseline_writes = {verb: operator.counter("gptoss_operator_api_requests_total", verb=verb) for verb in WRITE_VERBS}
    reconciles = _reconciles(operator)

    # Two full resyncs (every RESYNC_SECONDS) must pass with no write at all.
    wait_for(lambda: _reconciles(operator) >= reconciles + 2, f"two resyncs ({RESYNC_SECONDS}s apart)", timeout_s=60)
    assert resource_versions(kubectl_ns, name) == baseline_versions
    writes = {verb: operator.counter("gptoss_operator_api_requests_total", verb=verb) for verb in WRITE_VERBS}
    assert writes == baseline_writes


def _reconciles(operator: OperatorProcess) -> float:
    return operator.counter("gptoss_operator_reconciles_total", result="success")
