"""No confused deputy, on the real control plane (docs/security.md).

A GptOssDeployment cannot make the operator mount an unmarked Secret, send a download to an endpoint off
the cluster operator's allow-list, or take over an object someone else created. Each test runs its own
operator process watching only the test's namespace; nodes are kwok's. Every wait has a deadline.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Kubectl
from operator_fixtures import running_operator
from operator_process import OperatorProcess, Volumes, condition, get_cr, load_sample, wait_for_condition
from test_chart import (  # noqa: F401 - helm, release and crd_adoptable are fixtures
    CHART,
    KWOK_PLACEMENT,
    Helm,
    crd_adoptable,
    helm,
    rbac_denials,
    release,
    service_account_kubeconfig,
)
from test_operator import CHILD_KINDS, OWNER_LABEL

pytestmark = pytest.mark.cluster

NAME = "gpt-oss-20b"
TOKEN_LABEL = "gptoss.io/weights-token"
ALLOWED = "http://hf-mirror.allowed.example:8080"


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, crd: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator with an endpoint allow-list (GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS)."""
    env = {"GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS": f"https://huggingface.co,{ALLOWED}"}
    with running_operator(kubeconfig, namespace, tmp_path / "operator.log", env) as process:
        yield process


def with_weights(**hugging_face: Any) -> dict[str, Any]:
    cr = load_sample("gpt-oss-20b.yaml")
    weights = copy.deepcopy(cr["spec"]["weights"])
    weights["huggingFace"].update(hugging_face)
    cr["spec"]["weights"] = weights
    return cr


def token_secret(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf", "labels": labels},
        "stringData": {"token": "hf_not_a_real_token"},
    }


def owned_children(kubectl_ns: Kubectl) -> list[dict[str, Any]]:
    return list(kubectl_ns.json("get", CHILD_KINDS, "-l", f"{OWNER_LABEL}={NAME}")["items"])


def test_an_unmarked_token_secret_is_refused_until_marked(kubectl_ns: Kubectl, operator: OperatorProcess) -> None:
    kubectl_ns.apply(token_secret({"team": "ml"}))
    kubectl_ns.apply(with_weights(tokenSecretRef={"name": "hf", "key": "token"}))
    cr = wait_for_condition(
        kubectl_ns, NAME, "WeightsReady", "False", reason="TokenSecretNotMarked", timeout_s=60, operator=operator
    )
    message = condition(cr, "WeightsReady")["message"]
    assert "spec.weights.huggingFace.tokenSecretRef" in message
    assert f"kubectl label secret hf -n {kubectl_ns.namespace} {TOKEN_LABEL}=true" in message
    assert condition(cr, "Ready")["reason"] == "TokenSecretNotMarked"
    assert owned_children(kubectl_ns) == []  # nothing mounts the token
    events = kubectl_ns.json("get", "events", "--field-selector", "reason=TokenSecretNotMarked")["items"]
    assert len(events) == 1

    # The namespace owner marks it: the next resync uses it.
    kubectl_ns("label", "secret", "hf", f"{TOKEN_LABEL}=true")
    cr = wait_for_condition(kubectl_ns, NAME, "ChildrenApplied", "True", timeout_s=60, operator=operator)
    assert condition(cr, "WeightsReady")["reason"] != "TokenSecretNotMarked"
    assert owned_children(kubectl_ns)


def test_an_endpoint_off_the_allow_list_is_refused(kubectl_ns: Kubectl, operator: OperatorProcess) -> None:
    kubectl_ns.apply(with_weights(endpoint="https://collector.example"))
    cr = wait_for_condition(
        kubectl_ns, NAME, "WeightsReady", "False", reason="EndpointNotAllowed", timeout_s=60, operator=operator
    )
    message = condition(cr, "WeightsReady")["message"]
    assert "spec.weights.huggingFace.endpoint" in message and ALLOWED in message
    assert owned_children(kubectl_ns) == []

    # An endpoint on the list (spelled differently) is used.
    kubectl_ns.apply(with_weights(endpoint=f"{ALLOWED.upper().replace('HTTP://', 'http://')}/"))
    wait_for_condition(kubectl_ns, NAME, "ChildrenApplied", "True", timeout_s=60, operator=operator)
    assert owned_children(kubectl_ns)


def test_a_same_named_service_of_someone_else_is_left_untouched(kubectl_ns: Kubectl, operator: OperatorProcess) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "labels": {"owner": "someone-else"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
    }
    kubectl_ns.create(theirs)
    before = kubectl_ns.json("get", "service", NAME)
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
    cr = wait_for_condition(
        kubectl_ns, NAME, "ChildrenApplied", "False", reason="AdoptionRefused", timeout_s=60, operator=operator
    )
    message = condition(cr, "ChildrenApplied")["message"]
    assert f"Service/{NAME}" in message and "delete or rename" in message

    after = kubectl_ns.json("get", "service", NAME)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]  # not written at all
    assert "ownerReferences" not in after["metadata"]
    assert kubectl_ns.json("get", "deployment", NAME)["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    # One Event, however many reconciles ran (the resync runs every few seconds).
    wait_for_condition(kubectl_ns, NAME, "ChildrenApplied", "False", reason="AdoptionRefused", timeout_s=30)
    events = kubectl_ns.json("get", "events", "--field-selector", "reason=AdoptionRefused")["items"]
    assert len(events) == 1
    assert get_cr(kubectl_ns, NAME)["status"]["observedGeneration"] == 1


def test_the_chart_without_cluster_wide_pod_reads_suffices_and_status_says_capacity_is_not_counted(
    helm: Helm,  # noqa: F811
    kubectl: Kubectl,
    namespace: str,
    release: str,  # noqa: F811
    crd_adoptable: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    helm(
        "install", release, str(CHART), "--namespace", namespace, *KWOK_PLACEMENT, "--set", "crds.enabled=false",
        "--set", f"watchNamespaces={{{namespace}}}", "--set", "rbac.clusterWidePodReads=false",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    account = f"{release}-gpt-oss-operator"
    identity = f"system:serviceaccount:{namespace}:{account}"
    for scope, expected in ((("--all-namespaces",), "no"), (("--namespace", namespace), "yes")):
        answer = kubectl.run("auth", "can-i", "list", "pods", *scope, "--as", identity, check=False)
        assert answer.stdout.strip() == expected, scope
    # The operator as the chart's ServiceAccount, with the setting the chart gives its pods.
    token_config = service_account_kubeconfig(kubectl, namespace, account, tmp_path / "sa.kubeconfig")
    kubectl_ns = kubectl.in_namespace(namespace)
    volumes = Volumes(kubectl, namespace)
    env = {"GPTOSS_CLUSTER_WIDE_POD_READS": "false"}
    try:
        with OperatorProcess(token_config, [namespace], tmp_path / "operator.log", extra_env=env) as operator:
            kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
            cr = wait_for_condition(kubectl_ns, NAME, "Ready", "True", volumes=volumes, operator=operator)
            capacity = condition(cr, "CapacityAvailable")
            assert (capacity["status"], capacity["reason"]) == ("Unknown", "PodsNotReadable")
            assert "rbac.clusterWidePodReads=false" in capacity["message"]
            assert rbac_denials(operator, account) == []
    finally:
        volumes.delete_all()
