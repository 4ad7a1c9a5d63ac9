"""The local control plane behaves like a real GPU cluster: version, nodes, scheduling, admission, GC; and
its real node (marker ``realnode``, e2e/cluster/node.sh) runs containers: restricted pods with probes,
Services and DNS, the API server from a pod, dynamically provisioned volumes, logs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import CACHE_DIR, Kubectl, KubectlError, wait_until

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
KWOK_TAINT_KEY = "kwok.x-k8s.io/node"
EXPECTED_POOLS = {  # pool label -> (node count, GPUs per node)
    "h100x8": (2, 8),
    "h100x1": (2, 1),
    "cpu": (2, 0),
}


def _deployment(name: str, *, gpus: int = 0) -> dict[str, Any]:
    """A one-replica Deployment on the simulated nodes whose pod passes Pod Security ``restricted``; GPU pods
    target H100 nodes. (The real node would have to pull the image, and has GPUs of its own.)"""
    container: dict[str, Any] = {
        "name": "main",
        "image": "registry.k8s.io/pause:3.10",  # kwok runs no containers; on kind it is pulled
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "nodeSelector": {"gptoss.dev/simulated": "true"},
        # kwok's CPU nodes carry kwok's taint, so that pods which are not told otherwise run on the real node.
        "tolerations": [{"key": KWOK_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }
    if gpus:
        container["resources"]["limits"][GPU_RESOURCE] = str(gpus)
        pod_spec["tolerations"].append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
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


def test_api_server_reports_a_tested_kubernetes_minor(kubectl: Kubectl) -> None:
    """The minor of the newest (KUBE_VERSION) or, on the second cluster, the oldest (KUBE_VERSION_OLDEST) of
    versions.env (a minor, not a patch: e2e/kind runs any 1.36 patch)."""
    server = kubectl.json("version")["serverVersion"]
    lines = (Path(__file__).parent / "cluster" / "versions.env").read_text().splitlines()
    pinned = [line.split("=", 1)[1] for line in lines if line.startswith("KUBE_VERSION")]
    minors = {tuple(version.removeprefix("v").split(".")[:2]) for version in pinned}
    assert (server["major"], server["minor"]) in minors, server
    assert server["gitVersion"].startswith(f"v{server['major']}.{server['minor']}."), server


def test_simulated_nodes_are_ready_with_gpu_labels_and_allocatable(kubectl: Kubectl) -> None:
    # Only the pools of nodes.yaml: other tests and benchmarks add simulated nodes of their own meanwhile.
    pools = ",".join(EXPECTED_POOLS)
    nodes = kubectl.json("get", "nodes", "-l", f"gptoss.dev/simulated=true,gptoss.dev/pool in ({pools})")["items"]
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
                assert all(t["key"] != GPU_RESOURCE for t in taints), name
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


# ---------------------------------------------------------------------------------------------- real node
REAL_NODE_LABEL = "gptoss.dev/real-node"
REAL_NODE_GPUS = "8"
REFS_FILE = CACHE_DIR / "images" / "refs.env"
HTTP_PORT = 8080
RESTRICTED_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
READ_ONLY_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


@pytest.fixture(scope="module")
def python_image() -> str:
    """An image with python3, imported into the real node: the runtime's CPU image (e2e/images/build.sh), or
    ``GPTOSS_SMOKE_IMAGE``."""
    configured = os.environ.get("GPTOSS_SMOKE_IMAGE")
    if configured:
        return configured
    refs = {}
    if REFS_FILE.exists():
        pairs = (line.split("=", 1) for line in REFS_FILE.read_text().splitlines() if "=" in line)
        refs = {key.strip(): value.strip().strip("'\"") for key, value in pairs}
    if not refs.get("RUNTIME_CPU_IMAGE"):
        pytest.fail(
            f"no RUNTIME_CPU_IMAGE in {REFS_FILE}: build and load it (e2e/images/build.sh all; "
            "e2e/images/build.sh load --address /run/gptoss/containerd/containerd.sock) or set GPTOSS_SMOKE_IMAGE"
        )
    return refs["RUNTIME_CPU_IMAGE"]


@pytest.fixture(scope="module")
def real_node(kubectl: Kubectl) -> dict[str, Any]:
    nodes = kubectl.json("get", "nodes", "-l", f"{REAL_NODE_LABEL}=true")["items"]
    if len(nodes) != 1:
        pytest.fail(
            f"expected one node labelled {REAL_NODE_LABEL}=true, found {len(nodes)}: the local cluster's real node"
            " comes from e2e/cluster/node.sh (up.sh runs it as root unless GPTOSS_REAL_NODE=0); deselect these"
            " tests with -m 'not realnode'"
        )
    node: dict[str, Any] = nodes[0]
    return node


def _real_pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A pod for the real node that passes Pod Security ``restricted`` with a read-only root filesystem."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",  # imported into the node's containerd; no registry is reachable
        "command": command,
        "securityContext": READ_ONLY_CONTAINER_SECURITY,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            "securityContext": RESTRICTED_POD_SECURITY,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *spec.pop("volumes", [])],
            "enableServiceLinks": False,
            **spec,
        },
    }


def _http_server_pod(name: str, image: str) -> dict[str, Any]:
    return _real_pod(
        name,
        image,
        ["python3", "-m", "http.server", str(HTTP_PORT), "--directory", "/etc"],
        container={
            "ports": [{"name": "http", "containerPort": HTTP_PORT}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
        },
    )


def _run_to_completion(kubectl_ns: Kubectl, pod: dict[str, Any], timeout_s: int = 120) -> str:
    """Create a run-once pod, wait until it succeeds and return its log (diagnostics when it fails)."""
    name = pod["metadata"]["name"]
    pod["spec"]["restartPolicy"] = "Never"
    kubectl_ns.create(pod)

    def finished() -> bool:
        phase = kubectl_ns("get", "pod", name, "-o", "jsonpath={.status.phase}")
        return phase in ("Succeeded", "Failed")

    wait_until(finished, timeout_s=timeout_s, what=f"pod {name} to finish")
    logs = kubectl_ns("logs", name)
    phase = kubectl_ns("get", "pod", name, "-o", "jsonpath={.status.phase}")
    assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}\n{kubectl_ns.diagnostics()}"
    return logs


@pytest.mark.realnode
def test_real_node_is_ready_beside_the_kwok_nodes_with_simulated_gpus(
    kubectl: Kubectl, real_node: dict[str, Any]
) -> None:
    name, labels = real_node["metadata"]["name"], real_node["metadata"]["labels"]
    assert _ready(real_node), f"{name} is not Ready"
    assert real_node["status"]["allocatable"][GPU_RESOURCE] == REAL_NODE_GPUS
    assert labels["nvidia.com/gpu.product"] == H100_PRODUCT
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["nvidia.com/gpu.count"] == REAL_NODE_GPUS
    assert labels["nvidia.com/gpu.present"] == "true"
    # A kubelet with a container runtime, which kwok does not manage (it would fake the node's pods).
    assert real_node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert "kwok.x-k8s.io/node" not in real_node["metadata"].get("annotations", {})
    # Pods that tolerate nothing may run there (the operator, the mirror); it only repels them softly.
    assert all(t["effect"] == "PreferNoSchedule" for t in real_node["spec"].get("taints", [])), real_node["spec"]

    table = kubectl("get", "nodes", "--no-headers")
    statuses = {line.split()[0]: line.split()[1] for line in table.splitlines()}
    assert statuses[name] == "Ready"
    simulated = sum(count for count, _ in EXPECTED_POOLS.values())
    assert sum(status == "Ready" for status in statuses.values()) >= 1 + simulated


@pytest.mark.realnode
def test_restricted_pod_runs_on_the_real_node_with_a_passing_readiness_probe_and_logs(
    kubectl_ns: Kubectl, real_node: dict[str, Any], python_image: str
) -> None:
    kubectl_ns.create(_http_server_pod("web", python_image))
    kubectl_ns.wait("pod/web", "condition=Ready", 120)

    pod = kubectl_ns.json("get", "pod", "web")
    assert pod["spec"]["nodeName"] == real_node["metadata"]["name"]
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0
    assert status["containerID"].startswith("containerd://")
    # The probes' requests, in the container's own log, fetched from the kubelet through the API server.
    wait_until(lambda: '"GET / HTTP/1.1" 200' in kubectl_ns("logs", "web"), timeout_s=30, what="probe requests logged")


@pytest.mark.realnode
def test_service_dns_name_resolves_and_answers_from_another_pod(
    kubectl_ns: Kubectl, real_node: dict[str, Any], python_image: str
) -> None:
    namespace = kubectl_ns.namespace
    kubectl_ns.create(_http_server_pod("web", python_image))
    kubectl_ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }
    )
    kubectl_ns.wait("pod/web", "condition=Ready", 120)
    cluster_ip = kubectl_ns("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")

    fqdn = f"web.{namespace}.svc.cluster.local"
    # kube-proxy programs the Service's rules a moment after the endpoint turns ready (until then the
    # ClusterIP rejects connections), so the client retries refused connections for a bounded time, as
    # any real client of a freshly created Service must.
    client = (
        "import socket, time, urllib.request\n"
        f"print('resolved', socket.gethostbyname('{fqdn}'))\n"
        "deadline = time.monotonic() + 60\n"
        "while True:\n"
        "    try:\n"
        "        body = urllib.request.urlopen('http://web/', timeout=10).read().decode()\n"  # the search path
        "        break\n"
        "    except OSError as error:\n"
        "        if time.monotonic() > deadline:\n"
        "            raise\n"
        "        print('retrying after', error, flush=True)\n"
        "        time.sleep(1)\n"
        "print('answered', 'Directory listing for /' in body)\n"
    )
    logs = _run_to_completion(kubectl_ns, _real_pod("client", python_image, ["python3", "-c", client]))
    assert f"resolved {cluster_ip}" in logs
    assert "answered True" in logs


@pytest.mark.realnode
def test_pod_reaches_the_api_server_with_its_service_account_token(
    kubectl_ns: Kubectl, real_node: dict[str, Any], python_image: str
) -> None:
    client = (
        "import json, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "token = open(sa + '/token').read()\n"
        "request = urllib.request.Request('https://kubernetes.default.svc/api',"
        " headers={'Authorization': 'Bearer ' + token})\n"
        "context = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "print(json.dumps(json.load(urllib.request.urlopen(request, context=context, timeout=10))))\n"
    )
    logs = _run_to_completion(kubectl_ns, _real_pod("api-client", python_image, ["python3", "-c", client]))
    answer = json.loads(logs.strip().splitlines()[-1])
    assert answer["kind"] == "APIVersions"
    assert answer["versions"] == ["v1"]


@pytest.mark.realnode
def test_claim_on_the_default_storage_class_binds_and_a_pod_writes_to_it(
    kubectl_ns: Kubectl, real_node: dict[str, Any], python_image: str
) -> None:
    kubectl_ns.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
        }
    )
    kubectl_ns.wait("pvc/data", "jsonpath={.status.phase}=Bound", 180)
    claim = kubectl_ns.json("get", "pvc", "data")
    assert claim["spec"]["storageClassName"] == "local-path"  # the default class, filled in at admission

    writer = (
        "import pathlib\n"
        "path = pathlib.Path('/data/hello.txt')\n"
        "path.write_text('written by a real pod')\n"
        "print(path.read_text())\n"
    )
    pod = _real_pod(
        "writer",
        python_image,
        ["python3", "-c", writer],
        container={"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    )
    assert "written by a real pod" in _run_to_completion(kubectl_ns, pod)
