"""The chart's RBAC, audited against what the operator calls (docs/security.md), and the security values.

Every rule of the operator's roles is listed here with the call that needs it: a verb the operator does not
use fails the audit, and so does one it uses that the chart lacks (the real-pod suite then proves the grant
in a cluster: the operator runs under exactly these roles).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_chart_render import (
    CHART,
    RELEASE,
    VALUE_SETS,
    env_of,
    granted,
    helm,
    is_aggregated,
    of_kind,
    render,
    rules_of,
)

from gptoss_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster  # needs the helm the cluster tooling builds; no API server

CHILD_VERBS = {"get", "list", "watch", "create", "patch", "delete"}  # is it ours, caches, server-side apply, prune
# (group, resource) -> verbs, and why: the operator's whole grant when it watches every namespace.
OPERATOR_GRANT: dict[tuple[str, str], set[str]] = {
    ("gptoss.io", "gptossdeployments"): {"get", "list", "watch", "patch"},  # reconcile GET, Kopf, field owners
    ("gptoss.io", "gptossdeployments/status"): {"patch"},  # server-side apply of status
    ("gptoss.io", "gptossdeployments/scale"): {"patch"},  # the autoscaler
    ("gptoss.io", "gptossdeployments/finalizers"): {"update"},  # blockOwnerDeletion (OpenShift checks it)
    ("", "configmaps"): CHILD_VERBS,
    ("", "services"): CHILD_VERBS,
    ("", "persistentvolumeclaims"): CHILD_VERBS,
    ("apps", "deployments"): CHILD_VERBS,
    ("batch", "jobs"): CHILD_VERBS,
    ("policy", "poddisruptionbudgets"): CHILD_VERBS,
    ("networking.k8s.io", "networkpolicies"): CHILD_VERBS,
    ("autoscaling", "horizontalpodautoscalers"): CHILD_VERBS,
    ("monitoring.coreos.com", "podmonitors"): CHILD_VERBS,
    ("keda.sh", "scaledobjects"): CHILD_VERBS,
    ("", "secrets"): {"get"},  # a token Secret's label, as PartialObjectMetadata
    # core/v1 Events (Kopf's posting is off); list: a stuck download pod's FailedMount Events (fetch_events)
    ("", "events"): {"create", "list"},
    ("", "nodes"): {"list", "watch"},  # GPU node cache
    ("", "pods"): {"list", "watch"},  # pod cache (capacity counts every tenant's pods)
    ("storage.k8s.io", "storageclasses"): {"list", "watch"},  # why a cache claim is Pending
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},  # Kopf notices new CRDs
}


def operator_grant(docs: list[dict[str, Any]], kind: str | None = None) -> dict[tuple[str, str], set[str]]:
    grant: dict[tuple[str, str], set[str]] = {}
    for role, rule in rules_of(docs):
        if role["metadata"]["name"].endswith("-leader-election") or (kind and role["kind"] != kind):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grant.setdefault((group, resource), set()).update(rule["verbs"])
    return grant


def test_the_operator_is_granted_exactly_what_it_calls() -> None:
    assert operator_grant(render()) == OPERATOR_GRANT


def test_watching_a_list_grants_the_same_in_each_namespace() -> None:
    docs = render(*VALUE_SETS["namespaced"])
    namespaced = operator_grant(docs, "Role")
    cluster = operator_grant(docs, "ClusterRole")
    assert namespaced | cluster | {("", "namespaces"): {"list", "watch"}} == OPERATOR_GRANT | {
        ("", "namespaces"): {"list", "watch"}
    }
    assert ("", "secrets") in namespaced and ("", "secrets") not in cluster  # only where it watches CRs


def test_without_cluster_wide_pod_reads_pods_are_read_only_where_crs_are_watched() -> None:
    docs = render("rbac.clusterWidePodReads=false", "watchNamespaces={team-a}")
    assert ("", "pods") not in operator_grant(docs, "ClusterRole")
    assert operator_grant(docs, "Role")[("", "pods")] == {"list", "watch"}
    assert env_of(docs)["GPTOSS_CLUSTER_WIDE_POD_READS"] == "false"
    assert "GPTOSS_CLUSTER_WIDE_POD_READS" not in env_of(render())  # the default: cluster-wide


def test_cluster_wide_pod_reads_off_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env_of(render(*VALUE_SETS["confined"])).items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert settings.cluster_wide_pod_reads is False
    assert settings.allowed_endpoints == ("https://hub.example", "http://mirror.example:8080/hf")


def test_an_allow_list_entry_that_is_no_url_is_refused_by_the_chart() -> None:
    result = render_fails("operator.weightsAllowedEndpoints={huggingface.co}")
    assert "weightsAllowedEndpoints" in result


def render_fails(*sets: str) -> str:
    args = ["template", RELEASE, str(CHART)]
    for value in sets:
        args += ["--set", value]
    result = helm(*args, check=False)
    assert result.returncode != 0
    return result.stderr


def test_users_get_gptossdeployments_through_the_built_in_roles() -> None:
    docs = render()
    aggregated = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole") if is_aggregated(r)}
    view, edit = aggregated[f"{RELEASE}-view"], aggregated[f"{RELEASE}-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for label in ("aggregate-to-edit", "aggregate-to-admin"):
        assert edit["metadata"]["labels"][f"rbac.authorization.k8s.io/{label}"] == "true"
    assert {v for rule in view["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    edit_verbs = {r: set(rule["verbs"]) for rule in edit["rules"] for r in rule["resources"]}
    assert edit_verbs["gptossdeployments"] >= {"create", "update", "patch", "delete"}
    assert edit_verbs["gptossdeployments/scale"] == {"update", "patch"}
    # Nobody is bound to them directly: the built-in roles pick them up.
    bound = {b["roleRef"]["name"] for b in [*of_kind(docs, "ClusterRoleBinding"), *of_kind(docs, "RoleBinding")]}
    assert not bound & set(aggregated)


def test_aggregated_roles_can_be_left_out() -> None:
    docs = render("rbac.aggregateToDefaultRoles=false")
    assert not [r for r in of_kind(docs, "ClusterRole") if is_aggregated(r)]


def test_the_operator_itself_can_update_finalizers_only() -> None:
    assert granted(render(), "ClusterRole", "gptoss.io", "gptossdeployments/finalizers") == {"update"}
