"""What the caches keep for weights status: StorageClasses (reduced, optional) and a CR's download pods."""

from __future__ import annotations

from typing import Any

from gptoss_operator import names
from gptoss_operator.caches import ClusterCache, reduce_storage_class
from gptoss_operator.diagnosis import StorageClassFacts


class NoKube:
    """The cache is built but never started: no request may be made."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call {name}")


def test_storage_classes_are_reduced_to_what_status_reads() -> None:
    full = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "gp3",
            "uid": "x",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true", "other": "y" * 100},
        },
        "provisioner": "ebs.csi.aws.com",
        "volumeBindingMode": "WaitForFirstConsumer",
        "parameters": {"type": "gp3"},
    }
    reduced = reduce_storage_class(full)
    assert reduced["metadata"] == {
        "name": "gp3",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    }
    assert "parameters" not in reduced
    facts = StorageClassFacts.from_object(reduced)
    assert facts == StorageClassFacts("gp3", "ebs.csi.aws.com", is_default=True, wait_for_first_consumer=True)


def test_storage_classes_are_unknown_until_listed_and_never_hold_up_sync() -> None:
    cache = ClusterCache(NoKube(), [])  # type: ignore[arg-type]
    assert cache.storage_class_list() is None
    for reflector in cache.reflectors:
        reflector.synced.set()
    assert cache.synced  # the optional StorageClass watch is not waited for (it may be forbidden)
    cache.optional_reflectors[0].synced.set()
    assert cache.storage_class_list() == []


def test_download_pods_include_finished_ones() -> None:
    cache = ClusterCache(NoKube(), [])  # type: ignore[arg-type]
    labels = {names.LABEL_DEPLOYMENT: "demo", names.LABEL_COMPONENT: names.COMPONENT_WEIGHTS}
    for name, phase, namespace in [("a", "Failed", "team"), ("b", "Running", "team"), ("c", "Running", "other")]:
        cache.pods.upsert(
            {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "status": {"phase": phase}}
        )
    assert sorted(p["metadata"]["name"] for p in cache.pods_labelled("team", labels)) == ["a", "b"]
