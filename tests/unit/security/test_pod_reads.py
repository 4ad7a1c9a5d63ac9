"""Cluster-wide pod reads are optional: without them the operator watches only its own pods and says that
free GPUs are not counted (docs/security.md)."""

from __future__ import annotations

from typing import Any, cast

from gptoss_operator import names
from gptoss_operator.caches import ClusterCache
from gptoss_operator.kube import Kube
from gptoss_operator.status import REASON_PODS_NOT_READABLE, Observation, capacity_condition


def observation(**overrides: Any) -> Observation:
    values: dict[str, Any] = {
        "generation": 1,
        "desired_replicas": 1,
        "selector": "",
        "service_name": "demo",
        "template_annotations": {},
        "deployment": None,
        "capacity": None,
    }
    return Observation(**(values | overrides))


def test_capacity_not_counted_by_choice_says_so() -> None:
    value = capacity_condition(observation(cluster_wide_pod_reads=False))
    assert (value.status, value.reason) == ("Unknown", REASON_PODS_NOT_READABLE)
    assert "GPTOSS_CLUSTER_WIDE_POD_READS=false" in value.message and "rbac.clusterWidePodReads" in value.message


def test_capacity_not_readable_for_lack_of_rbac_says_what_to_grant() -> None:
    value = capacity_condition(observation())
    assert (value.status, value.reason) == ("Unknown", "NotChecked")
    assert "HTTP 403" in value.message and "rbac.clusterWidePodReads" in value.message


def pod_watches(cache: ClusterCache) -> list[tuple[str | None, str | None]]:
    return [(r.spec.namespace, r.spec.label_selector) for r in cache.reflectors if r.spec.rtype.kind == "Pod"]


def test_the_pod_cache_is_cluster_wide_by_default() -> None:
    cache = ClusterCache(cast(Kube, object()), [], namespaces=["team-a"])
    assert pod_watches(cache) == [(None, None)]


def test_without_cluster_wide_reads_only_own_pods_in_watched_namespaces_are_watched() -> None:
    cache = ClusterCache(cast(Kube, object()), [], namespaces=["team-a", "team-b"], cluster_wide_pods=False)
    assert pod_watches(cache) == [("team-a", names.LABEL_DEPLOYMENT), ("team-b", names.LABEL_DEPLOYMENT)]
    everywhere = ClusterCache(cast(Kube, object()), [], cluster_wide_pods=False)
    assert pod_watches(everywhere) == [(None, names.LABEL_DEPLOYMENT)]
