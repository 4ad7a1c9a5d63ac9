"""Watch-fed caches against kmock: a steady-state reconcile makes no LIST, and the caches follow the watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from kmock_support import NAMESPACE, NOW, RequestLog, SsaEmulator, eventually, in_thread, sample

from gptoss_operator import builders, names
from gptoss_operator.caches import ClusterCache, reduce_node, reduce_pod
from gptoss_operator.kube import Kube
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings

pytestmark = [pytest.mark.kmock(cls=SsaEmulator)]  # asyncio_mode is auto

NAME = "gpt-oss-20b"
CR_COLLECTION = f"/apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments"
RESOURCES = {
    "gptoss.io/v1alpha1/gptossdeployments": ("GptOssDeployment", True),
    "apps/v1/deployments": ("Deployment", True),
    "batch/v1/jobs": ("Job", True),
    "v1/services": ("Service", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
}
CORE_KINDS = [kind for kind in builders.MANAGED_KINDS if kind.feature is None]


def gpu_node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {names.GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}},
        "status": {
            "allocatable": {names.GPU_RESOURCE: str(gpus)},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "x" * 200}],
            "images": [{"names": ["big"], "sizeBytes": 1}],
        },
    }


@pytest.fixture
async def cache(kmock: Any, kube: Kube) -> AsyncIterator[ClusterCache]:
    for key, (kind, namespaced) in RESOURCES.items():
        kmock.resources[key] = kmock_resource(kind, namespaced)
    kmock.objects[kmock.resource("v1/nodes"), None, "gpu-a"] = gpu_node("gpu-a")
    triggered: list[tuple[str, str]] = []
    cache = ClusterCache(kube, CORE_KINDS, on_owner_change=lambda ns, n: triggered.append((ns, n)))
    cache.start()
    assert await in_thread(cache.wait_synced, 10)
    yield cache
    await in_thread(cache.stop)


def kmock_resource(kind: str, namespaced: bool) -> Any:
    return kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=["list", "watch", "get", "patch"])


async def test_a_steady_state_reconcile_lists_nothing(
    kmock: Any, kube: Kube, cache: ClusterCache, request_log: RequestLog
) -> None:
    reconciler = Reconciler(kube, OperatorSettings(), now=lambda: NOW, cache=cache)
    await asyncio.to_thread(kube.request, "create", "POST", CR_COLLECTION, body=sample())
    await eventually(lambda: cache.deployment(NAMESPACE, NAME) is not None)  # the watch brings the CR
    first = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert ("Deployment", NAME) in first.applied
    # The watches bring the applied children into the cache, and the status written.
    await eventually(lambda: ("Deployment", NAME) in cache.children_of(NAMESPACE, NAME))
    await eventually(lambda: len(cache.children_of(NAMESPACE, NAME)) == len(first.applied))
    await eventually(lambda: bool((cache.deployment(NAMESPACE, NAME) or {}).get("status")))

    request_log.calls.clear()
    again = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert again.applied == () and not again.status_patched
    verbs = [verb for verb in request_log.verbs() if verb != "watch"]
    assert verbs == []  # no LIST, not even a GET: the CR, its children, pods and nodes all come from the caches


def test_the_cr_store_never_goes_back_to_an_older_version_nor_revives_a_deleted_cr() -> None:
    cache = ClusterCache(Kube(object()), [])

    def cr(version: str, phase: str) -> dict[str, Any]:
        meta = {"namespace": NAMESPACE, "name": NAME, "resourceVersion": version}
        return {"kind": names.KIND, "metadata": meta, "status": {"phase": phase}}

    cache.deployments.upsert(cr("10", "Pending"))
    cache.remember_written(cr("12", "Ready"))  # our own status write, before its watch echo
    cache.deployments.upsert(cr("11", "Progressing"))  # an earlier event still on its way
    assert (cache.deployment(NAMESPACE, NAME) or {})["status"]["phase"] == "Ready"
    cache.deployments.upsert(cr("13", "Degraded"))
    assert (cache.deployment(NAMESPACE, NAME) or {})["status"]["phase"] == "Degraded"
    cache.deployments.remove(cr("14", "Degraded"))
    cache.remember_written(cr("15", "Ready"))  # the answer to a write that crossed the deletion
    assert cache.deployment(NAMESPACE, NAME) is None


async def test_capacity_comes_from_the_cached_gpu_nodes(kmock: Any, kube: Kube, cache: ClusterCache) -> None:
    assert [n["metadata"]["name"] for n in cache.snapshot().nodes] == ["gpu-a"]
    kmock.objects[kmock.resource("v1/nodes"), None, "gpu-b"] = gpu_node("gpu-b", 4)
    # kmock emits no watch event for objects placed directly; a created one is seen through the watch.
    await asyncio.to_thread(kube.request, "create", "POST", "/api/v1/nodes", body=gpu_node("gpu-c", 2))
    await eventually(lambda: "gpu-c" in {n["metadata"]["name"] for n in cache.snapshot().nodes})


def test_pods_and_nodes_are_reduced_to_what_capacity_and_status_read() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}, "managedFields": [{"x": 1}] * 50},
        "spec": {
            "nodeName": "gpu-a",
            "volumes": [{"name": "v"}] * 20,
            "containers": [{"name": "c", "image": "i", "env": [{"name": "E"}] * 30, "resources": {"limits": {}}}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    reduced = reduce_pod(pod)
    assert "managedFields" not in reduced["metadata"] and "volumes" not in reduced["spec"]
    assert reduced["spec"]["containers"] == [{"name": "c", "resources": {"limits": {}}}]
    assert reduced["status"]["podIP"] == "10.0.0.1"
    node = reduce_node(gpu_node("gpu-a"))
    assert "images" not in node["status"]
    assert node["status"]["conditions"] == [{"type": "Ready", "status": "True"}]


def test_only_spec_or_metadata_changes_of_a_cr_trigger_its_reconcile() -> None:
    triggered: list[tuple[str, str]] = []
    cache = ClusterCache(Kube(object()), [], on_owner_change=lambda ns, n: triggered.append((ns, n)))
    cr = {"metadata": {"namespace": "team", "name": "m", "generation": 1}, "status": {"phase": "Pending"}}
    cache._deployment_changed("ADDED", cr)
    cache._deployment_changed("MODIFIED", {**cr, "status": {"phase": "Ready"}})  # our own status write echoes
    assert triggered == [("team", "m")]
    cache._deployment_changed("MODIFIED", {**cr, "metadata": {**cr["metadata"], "generation": 2}})  # a spec change
    cache._deployment_changed("DELETED", cr)
    assert triggered == [("team", "m")] * 3


def test_children_and_server_pods_trigger_their_owner() -> None:
    triggered: list[tuple[str, str]] = []
    cache = ClusterCache(Kube(object()), [], on_owner_change=lambda ns, n: triggered.append((ns, n)))
    owned = {"kind": "GptOssDeployment", "name": "m", "controller": True}
    cache._child_changed("MODIFIED", {"metadata": {"namespace": "team", "ownerReferences": [owned]}})
    cache._pod_changed("MODIFIED", {"metadata": {"namespace": "team", "labels": {names.LABEL_DEPLOYMENT: "m"}}})
    cache._pod_changed("MODIFIED", {"metadata": {"namespace": "team", "labels": {"app": "other"}}})
    assert triggered == [("team", "m"), ("team", "m")]


def test_pods_outside_the_watched_namespaces_trigger_nothing() -> None:
    triggered: list[tuple[str, str]] = []
    cache = ClusterCache(
        Kube(object()), [], namespaces=["team"], on_owner_change=lambda ns, n: triggered.append((ns, n))
    )
    labels = {names.LABEL_DEPLOYMENT: "m"}
    cache._pod_changed("MODIFIED", {"metadata": {"namespace": "elsewhere", "labels": labels}})
    cache._pod_changed("MODIFIED", {"metadata": {"namespace": "team", "labels": labels}})
    assert triggered == [("team", "m")]


async def test_the_runtime_never_queues_a_cr_outside_its_namespaces() -> None:
    from gptoss_operator.handlers import OperatorRuntime

    runtime = OperatorRuntime(Kube(object()), OperatorSettings(namespaces=["team"]), child_kinds=[])
    runtime.queue.start()
    runtime.enqueue("elsewhere", "m")
    runtime.enqueue("team", "m")
    assert len(runtime.queue) + runtime.queue.processed >= 1
    assert ("elsewhere", "m") not in runtime.queue._queued
    await runtime.queue.stop()


def test_a_cr_whose_status_lags_its_spec_is_urgent_and_a_reconciled_one_is_not() -> None:
    urgent: list[str] = []
    plain: list[str] = []
    cache = ClusterCache(
        Kube(object()),
        [],
        on_owner_change=lambda _ns, name: plain.append(name),
        on_spec_change=lambda _ns, name: urgent.append(name),
    )
    cache._deployment_changed("ADDED", {"metadata": {"namespace": "t", "name": "new", "generation": 1}})
    done = {"metadata": {"namespace": "t", "name": "done", "generation": 3}, "status": {"observedGeneration": 3}}
    cache._deployment_changed("ADDED", done)
    lagging = {"metadata": {"namespace": "t", "name": "lag", "generation": 4}, "status": {"observedGeneration": 3}}
    cache._deployment_changed("ADDED", lagging)
    assert urgent == ["new", "lag"] and plain == ["done"]
