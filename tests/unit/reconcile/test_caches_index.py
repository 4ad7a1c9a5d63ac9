"""The caches' indexes and GPU count: a reconcile reads its own pods and children, and the capacity, without
scanning the fleet, and the answers are the same as a scan's."""

from __future__ import annotations

from typing import Any

from gptoss_operator import names
from gptoss_operator.autoscaling import capacity
from gptoss_operator.caches import CapacitySnapshot, ClusterCache, GpuUsage, Index, Store, _owner_label_group
from gptoss_operator.kube import Kube


def pod(name: str, owner: str | None, node: str | None, gpus: int, phase: str = "Running", ns: str = "a") -> Any:
    labels = {names.LABEL_DEPLOYMENT: owner} if owner else {}
    resources = {"requests": {names.GPU_RESOURCE: str(gpus)}} if gpus else {}
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": resources}]},
        "status": {"phase": phase},
    }


def node(name: str, gpus: int = 8) -> Any:
    return {
        "metadata": {"name": name, "labels": {names.GPU_PRODUCT_LABEL: "H100"}},
        "status": {"allocatable": {names.GPU_RESOURCE: str(gpus)}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def names_of(objects: list[Any]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects)


def test_the_index_follows_upserts_relabels_removals_and_relists() -> None:
    store = Store(index=Index(_owner_label_group))
    store.replace([pod("m1-0", "m1", "n1", 1), pod("m1-1", "m1", "n1", 1), pod("m2-0", "m2", "n2", 1)])
    assert names_of(store.indexed(("a", "m1"))) == ["m1-0", "m1-1"]

    store.upsert(pod("m1-1", "m2", "n1", 1))  # relabelled: moves to the other group
    store.remove(pod("m1-0", "m1", "n1", 1))
    assert store.indexed(("a", "m1")) == []
    assert names_of(store.indexed(("a", "m2"))) == ["m1-1", "m2-0"]

    store.replace([pod("m3-0", "m3", "n1", 1)])  # a relist drops what it no longer shows
    assert store.indexed(("a", "m2")) == []
    assert names_of(store.indexed(("a", "m3"))) == ["m3-0"]
    assert store.indexed(("b", "m3")) == []  # another namespace's group


def test_the_gpu_count_kept_per_change_equals_a_count_of_every_pod() -> None:
    usage = GpuUsage()
    store = Store(observers=[usage])
    store.replace([pod("a", "m", "n1", 2), pod("b", None, "n1", 1), pod("c", "m", None, 1), pod("d", None, "n2", 0)])
    store.upsert(pod("c", "m", "n2", 1))  # bound to a node now
    store.upsert(pod("a", "m", "n1", 2, phase="Succeeded"))  # finished: holds nothing
    store.upsert(pod("e", None, "n3", 4))
    store.remove(pod("e", None, "n3", 4))
    assert usage.per_node() == capacity.gpus_in_use(store.items()) == {"n1": 1, "n2": 1}

    store.replace([pod("f", None, "n1", 3)], namespace="a")  # a relist of the namespace
    assert usage.per_node() == capacity.gpus_in_use(store.items()) == {"n1": 3}


def cache_with(pods: list[Any], nodes: list[Any]) -> ClusterCache:
    cache = ClusterCache(Kube.__new__(Kube), [])  # never started: the stores are fed by hand
    cache.pods.replace(pods)
    cache.nodes.replace(nodes)
    return cache


def test_the_snapshot_is_shared_until_a_pod_or_node_changes() -> None:
    cache = cache_with([pod("m-0", "m", "n1", 1), pod("x", None, "n1", 2)], [node("n1")])
    first = cache.snapshot()
    assert cache.snapshot() is first
    assert first.gpus_used == {"n1": 3}

    cache.pods.upsert(pod("y", None, "n1", 1))
    second = cache.snapshot()
    assert second is not first
    assert second.gpus_used == {"n1": 4} and len(second.pods) == 3

    cache.nodes.upsert(node("n2"))
    assert len(cache.snapshot().nodes) == 2


def test_own_pods_by_index_are_those_a_scan_finds() -> None:
    pods = [pod(f"m{i % 5}-{i}", f"m{i % 5}", f"n{i % 3}", 1, ns="a" if i % 2 else "b") for i in range(40)]
    pods.append(pod("m1-done", "m1", "n1", 1, phase="Failed", ns="a"))
    cache = cache_with(pods, [])
    labels = {names.LABEL_DEPLOYMENT: "m1"}
    scanned = [
        p
        for p in pods
        if p["metadata"]["namespace"] == "a" and p["metadata"]["labels"].get(names.LABEL_DEPLOYMENT) == "m1"
    ]
    assert names_of(cache.pods_labelled("a", labels)) == names_of(scanned)
    assert names_of(cache.pods_of("a", labels)) == names_of([p for p in scanned if p["status"]["phase"] == "Running"])


def test_a_fit_from_the_kept_count_and_own_pods_equals_one_from_every_pod() -> None:
    nodes = [node("n1"), node("n2"), node("n3", gpus=4)]
    pods = [pod(f"o{i}", None, f"n{1 + i % 3}", 1) for i in range(9)] + [
        pod("m-0", "m", "n1", 2),
        pod("m-1", "m", None, 2),
    ]
    placement = capacity.Placement(gpus_per_replica=2, own_pod_labels={names.LABEL_DEPLOYMENT: "m"})
    own = [p for p in pods if p["metadata"]["labels"]]
    snapshot = CapacitySnapshot(nodes, pods)  # listed objects: the count is made from them
    assert capacity.replicas_that_fit(nodes, own, placement, used=snapshot.gpus_used) == capacity.replicas_that_fit(
        nodes, pods, placement
    )
