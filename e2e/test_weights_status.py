"""Status that says what is wrong with the weights, on the real control plane (kwok nodes).

Each test starts its own operator watching only its namespace, applies a CR that cannot get its weights for
one reason, and waits for `WeightsReady=False` with the reason and a message that names the culprit: a
StorageClass that does not exist (shared cache claim, and volumes per replica), a token Secret that does
not exist, a download pod that no node accepts. The classes named here exist nowhere (the cluster has
none, or the real node's `local-path` once that node has joined). Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Kubectl
from operator_process import OperatorProcess, Volumes, condition, load_sample, wait_for_condition

pytestmark = pytest.mark.cluster

NAME = "gpt-oss-20b"
ABSENT_CLASS = "gptoss-e2e-no-such-class"
SOURCE = {"repo": "openai/gpt-oss-20b", "revision": "main"}
# A status verdict follows a watch event in one reconcile; this bounds the operator's start plus a few.
VERDICT_TIMEOUT_S = 60


def start_operator(
    kubeconfig: Path, namespace: str, tmp_path: Path, env: dict[str, str] | None = None
) -> OperatorProcess:
    return OperatorProcess(kubeconfig, [namespace], tmp_path / "operator.log", extra_env=env).start()


def weights_verdict(kubectl_ns: Kubectl, operator: OperatorProcess, reason: str, **kw: Any) -> dict[str, Any]:
    cr = wait_for_condition(
        kubectl_ns, NAME, "WeightsReady", "False", reason=reason, operator=operator, timeout_s=VERDICT_TIMEOUT_S, **kw
    )
    return condition(cr, "WeightsReady")


def test_a_shared_cache_of_a_class_that_does_not_exist_is_volume_pending(
    kubectl_ns: Kubectl, operator: OperatorProcess
) -> None:
    cache = {"size": "40Gi", "accessMode": "ReadWriteOnce", "storageClassName": ABSENT_CLASS}
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml", weights={"huggingFace": SOURCE, "cache": cache}))
    weights = weights_verdict(kubectl_ns, operator, "VolumePending")
    assert f"StorageClass {ABSENT_CLASS}" in weights["message"]
    assert "does not exist" in weights["message"]
    # It lists the classes the cluster does have (the real node's `local-path` once it has joined).
    classes = [c["metadata"]["name"] for c in kubectl_ns.json("get", "storageclasses")["items"]]
    assert all(name in weights["message"] for name in classes), (classes, weights["message"])
    assert classes or "the cluster has no StorageClass" in weights["message"]
    cr = kubectl_ns.json("get", "gptoss", NAME)
    assert condition(cr, "Ready")["reason"] == "WeightsNotReady"


def test_volumes_per_replica_of_a_class_that_does_not_exist_are_volume_pending(
    kubectl_ns: Kubectl, operator: OperatorProcess
) -> None:
    cache = {"size": "40Gi", "storageClassName": ABSENT_CLASS}  # no accessMode: a volume per replica
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml", weights={"huggingFace": SOURCE, "cache": cache}))
    weights = weights_verdict(kubectl_ns, operator, "VolumePending")
    assert f"StorageClass {ABSENT_CLASS}" in weights["message"]


def test_a_token_secret_that_does_not_exist_is_named(kubectl_ns: Kubectl, operator: OperatorProcess) -> None:
    source = {**SOURCE, "tokenSecretRef": {"name": "hf-token-absent", "key": "token"}}
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml", weights={"huggingFace": source}))
    weights = weights_verdict(kubectl_ns, operator, "TokenSecretMissing")
    assert "Secret hf-token-absent" in weights["message"]
    assert "tokenSecretRef" in weights["message"]


def test_a_download_pod_no_node_accepts_quotes_the_scheduler(
    kubeconfig: Path, kubectl_ns: Kubectl, namespace: str, crd: None, volumes: Volumes, tmp_path: Path
) -> None:
    selector = {"gptoss.dev/e2e-no-such-node": namespace}  # no node carries it: the Job's pod never schedules
    process = start_operator(kubeconfig, namespace, tmp_path, {"GPTOSS_FETCH_NODE_SELECTOR": json.dumps(selector)})
    try:
        cache = {"size": "40Gi", "accessMode": "ReadWriteOnce"}  # one shared claim, filled by a Job
        kubectl_ns.apply(load_sample("gpt-oss-20b.yaml", weights={"huggingFace": SOURCE, "cache": cache}))
        weights = weights_verdict(kubectl_ns, process, "FetcherUnschedulable", volumes=volumes)
        assert "cannot be scheduled" in weights["message"]
        assert "node affinity/selector" in weights["message"]  # the scheduler's own words
    finally:
        exit_code = process.stop()
        print(f"--- operator log ({process.log_path}), exit {exit_code} ---\n{process.logs()}")
