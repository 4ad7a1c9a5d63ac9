"""The local control plane behaves like a real GPU cluster: version, nodes, scheduling, admission, GC."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Kubectl, KubectlError, wait_until

pytestmark = pytest.mark.cluster

H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_RESOURCE = "nvidia.com/gpu"
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
EXPECTED_POOLS = {  # pool label -> (node count, GPUs per node)
    "h100x8": (2, 8),
    "h100x1": (2, 1),
    "cpu": (2, 0),
}


def _deployment(name: str, *, gpus: int = 0) -> dict[str, Any]:
    """A one-replica Deployment whose pod passes Pod Security ``restricted``; GPU pods target H100 nodes."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "registry.k8s.io/pause:3.10",  # kwok runs no containers; on kind it is pulled
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
    }
    pod_spec: dict[str, Any] = {"containers": [container]}
    if gpus:
        container["resources"]["limits"][GPU_RESOURCE] = str(gpus)
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100_PRODUCT]}
                            ]
                        }
                    ]
                }
            }
        }
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_api_server_reports_kubernetes_1_36(kubectl: Kubectl) -> None:
    server = kubectl.json("version")["serverVersion"]
    assert server["gitVersion"].startswith("v1.36."), server
    assert (server["major"], server["minor"]) == ("1", "36")


def test_simulated_nodes_are_ready_with_gpu_labels_and_allocatable(kubectl: Kubectl) -> None:
    nodes = kubectl.json("get", "nodes", "-l", "gptoss.dev/simulated=true")["items"]
    by_pool: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        by_pool.setdefault(node["metadata"]["labels"]["gptoss.dev/pool"], []).append(node)
    assert {pool: len(members) for pool, members in by_pool.items()} == {
        pool: count for pool, (count, _) in EXPECTED_POOLS.items()
    }
    for pool, (_, gpus) in EXPECTED_POOLS.items():
        for node in by_pool[pool]:
            name, labels = node["metadata"]["name"], node["metadata"]["labels"]
            assert _ready(node), f"{name} is not Ready"
            allocatable, taints = node["status"]["allocatable"], node["spec"].get("taints", [])
            if gpus:
                assert allocatable[GPU_RESOURCE] == str(gpus), name
                assert labels["nvidia.com/gpu.product"] == H100_PRODUCT, name
                assert labels["nvidia.com/gpu.memory"] == "81559", name
                assert labels["nvidia.com/gpu.count"] == str(gpus), name
                assert labels["nvidia.com/gpu.present"] == "true", name
                assert {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"} in taints, name
            else:
                assert GPU_RESOURCE not in allocatable, name
                assert "nvidia.com/gpu.present" not in labels, name
                assert taints == [], name
            assert {"cpu", "memory", "pods"} <= allocatable.keys(), name


def test_two_gpu_pod_lands_on_an_eight_gpu_node_and_becomes_ready(kubectl_ns: Kubectl) -> None:
    kubectl_ns.apply(_deployment("two-gpus", gpus=2))
    kubectl_ns.rollout_status("two-gpus")

    (pod,) = kubectl_ns.json("get", "pods", "-l", "app=two-gpus")["items"]
    assert _ready(pod)
    node = kubectl_ns.json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["gptoss.dev/pool"] == "h100x8"
    assert node["status"]["allocatable"][GPU_RESOURCE] == "8"


def test_pod_asking_more_gpus_than_any_node_has_stays_unschedulable(kubectl_ns: Kubectl) -> None:
    kubectl_ns.apply(_deployment("nine-gpus", gpus=9))

    def unschedulable() -> bool:
        pods = kubectl_ns.json("get", "pods", "-l", "app=nine-gpus")["items"]
        return any(
            c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
            for pod in pods
            for c in pod.get("status", {}).get("conditions", [])
        )

    wait_until(unschedulable, timeout_s=60, what="the scheduler to mark the 9-GPU pod Unschedulable")
    (pod,) = kubectl_ns.json("get", "pods", "-l", "app=nine-gpus")["items"]
    assert not pod["spec"].get("nodeName")


def test_privileged_pod_is_rejected_by_pod_security_restricted(kubectl_ns: Kubectl) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [{"name": "main", "image": "registry.invalid/x:1", "securityContext": {"privileged": True}}]
        },
    }
    with pytest.raises(KubectlError) as rejected:
        kubectl_ns.apply(pod)
    assert 'violates PodSecurity "restricted:latest"' in rejected.value.result.stderr
    assert "privileged" in rejected.value.result.stderr
    assert kubectl_ns("get", "pods", "--ignore-not-found", "-o", "name") == ""


def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(kubectl_ns: Kubectl) -> None:
    kubectl_ns.apply(_deployment("collected"))
    kubectl_ns.rollout_status("collected")
    deployment = kubectl_ns.json("get", "deployment", "collected")
    (replicaset,) = kubectl_ns.json("get", "replicasets", "-l", "app=collected")["items"]
    (pod,) = kubectl_ns.json("get", "pods", "-l", "app=collected")["items"]
    assert [o["uid"] for o in replicaset["metadata"]["ownerReferences"]] == [deployment["metadata"]["uid"]]
    assert [o["uid"] for o in pod["metadata"]["ownerReferences"]] == [replicaset["metadata"]["uid"]]

    # Background cascading: the API server deletes only the Deployment; the garbage collector does the rest.
    kubectl_ns("delete", "deployment", "collected", "--cascade=background", "--wait=false")

    kubectl_ns.wait(f"replicaset/{replicaset['metadata']['name']}", "delete", 60)
    kubectl_ns.wait(f"pod/{pod['metadata']['name']}", "delete", 60)
    assert kubectl_ns("get", "replicasets,pods", "-l", "app=collected", "-o", "name") == ""
