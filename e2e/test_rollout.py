"""Rollouts without outages on the real control plane: a new weights revision downloads before pods roll.

kwok completes a Job's pod at once on its nodes. To hold a download open, the operator of this test runs
fetches only on nodes carrying a label of the test's own (`GPTOSS_FETCH_NODE_SELECTOR`); the test puts
that label on one kwok node when a download may finish and takes it off when one must wait, so the new
revision's Job stays Pending until the test lets it run. Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Kubectl, wait_until
from operator_fixtures import running_operator
from operator_process import (
    KWOK_NODE,
    KWOK_TOLERATION,
    OperatorProcess,
    Volumes,
    condition,
    get_cr,
    load_sample,
    wait_for_condition,
)

pytestmark = pytest.mark.cluster

NAME = "gpt-oss-20b"
OWNER_LABEL = "gptoss.io/deployment"
TEMPLATE_HASH = "gptoss.io/template-hash"
OLD_REVISION = "a" * 40
NEW_REVISION = "b" * 40


@pytest.fixture
def fetch_label(namespace: str) -> str:
    """A node label of this test's own: fetch pods schedule only where it is."""
    return "gptoss.dev/e2e-fetch-" + hashlib.sha256(namespace.encode()).hexdigest()[:12]


@pytest.fixture
def fetch_node(kubectl: Kubectl, fetch_label: str) -> Iterator[str]:
    """A kwok node without GPUs that can carry the fetch label (taken off again afterwards)."""
    nodes = kubectl.json("get", "nodes", "-l", "type=kwok,!nvidia.com/gpu.product")["items"]
    assert nodes, "the kwok cluster has no CPU-only node"
    name = str(nodes[0]["metadata"]["name"])
    yield name
    kubectl("label", "node", name, f"{fetch_label}-")


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, crd: None, tmp_path: Path, fetch_label: str
) -> Iterator[OperatorProcess]:
    env = {
        "GPTOSS_FETCH_NODE_SELECTOR": json.dumps({**KWOK_NODE, fetch_label: "true"}),
        "GPTOSS_FETCH_TOLERATIONS": json.dumps([KWOK_TOLERATION]),
    }
    with running_operator(kubeconfig, namespace, tmp_path / "operator.log", env) as process:
        yield process


def a_cr(revision: str) -> dict[str, Any]:
    cr = load_sample(f"{NAME}.yaml")
    cr["spec"]["weights"] = {
        "huggingFace": {"repo": "openai/gpt-oss-20b", "revision": revision},
        "cache": {"size": "40Gi", "accessMode": "ReadWriteMany"},  # one shared cache: one download Job
    }
    return cr


def deployment(kubectl_ns: Kubectl) -> dict[str, Any]:
    return dict(kubectl_ns.json("get", "deployment", NAME))


def template_hash(kubectl_ns: Kubectl) -> str:
    return str(deployment(kubectl_ns)["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH])


def plan_config_maps(kubectl_ns: Kubectl) -> set[str]:
    items = kubectl_ns.json("get", "configmaps", "-l", f"{OWNER_LABEL}={NAME}")["items"]
    return {str(item["metadata"]["name"]) for item in items if item["metadata"]["name"].startswith(f"{NAME}-plan-")}


def mounted_plan(kubectl_ns: Kubectl) -> str:
    volumes = deployment(kubectl_ns)["spec"]["template"]["spec"]["volumes"]
    return str(next(v["configMap"]["name"] for v in volumes if v["name"] == "plan"))


def jobs(kubectl_ns: Kubectl) -> list[dict[str, Any]]:
    return list(kubectl_ns.json("get", "jobs", "-l", f"{OWNER_LABEL}={NAME}")["items"])


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    wait_until(predicate, timeout_s=timeout_s, interval_s=0.5, what=what)


def rolled_out(kubectl_ns: Kubectl) -> bool:
    found = deployment(kubectl_ns)
    status = found.get("status") or {}
    replicas = found["spec"]["replicas"]
    return (
        status.get("observedGeneration", 0) >= found["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
    )


def test_a_new_revision_downloads_while_the_old_pods_serve_then_rolls(
    kubectl: Kubectl,
    kubectl_ns: Kubectl,
    operator: OperatorProcess,
    volumes: Volumes,
    fetch_node: str,
    fetch_label: str,
) -> None:
    kubectl("label", "node", fetch_node, f"{fetch_label}=true", "--overwrite")
    kubectl_ns.apply(a_cr(OLD_REVISION))
    wait_for_condition(kubectl_ns, NAME, "Ready", "True", volumes=volumes, operator=operator)
    old_template, old_plan = template_hash(kubectl_ns), mounted_plan(kubectl_ns)
    old_job = {job["metadata"]["name"] for job in jobs(kubectl_ns)}

    # The next download cannot run: no node carries the label now.
    kubectl("label", "node", fetch_node, f"{fetch_label}-")
    kubectl_ns.apply(a_cr(NEW_REVISION))
    wait_for_condition(kubectl_ns, NAME, "Progressing", "True", reason="DownloadingNewRevision", operator=operator)
    held: dict[str, Any] = {}

    def serving_while_held() -> bool:  # the Deployment's controller may still be catching up with the apply
        held.update(get_cr(kubectl_ns, NAME))
        generation = held["metadata"]["generation"]
        progressing, ready = condition(held, "Progressing"), condition(held, "Ready")
        assert progressing.get("reason") == "DownloadingNewRevision", held["status"]
        return bool(ready.get("status") == "True" and ready.get("observedGeneration") == generation)

    wait_for(serving_while_held, "Ready=True from the old pods while the new revision downloads")

    new_jobs = [job for job in jobs(kubectl_ns) if job["metadata"]["name"] not in old_job]
    assert len(new_jobs) == 1 and not (new_jobs[0].get("status") or {}).get("succeeded")
    assert new_jobs[0]["metadata"]["name"] in condition(held, "Progressing")["message"]
    assert template_hash(kubectl_ns) == old_template  # the old pods keep serving the old revision
    assert mounted_plan(kubectl_ns) == old_plan
    plans = plan_config_maps(kubectl_ns)
    assert old_plan in plans and len(plans) == 2  # the new plan waits beside the one the pods mount
    new_plan = (plans - {old_plan}).pop()

    # Let the download finish: the pod template switches, the pods roll, and only then the old plan goes.
    kubectl("label", "node", fetch_node, f"{fetch_label}=true", "--overwrite")
    wait_for(lambda: template_hash(kubectl_ns) != old_template, "the pod template to switch after the download")
    assert mounted_plan(kubectl_ns) == new_plan

    def old_plan_pruned() -> bool:
        if old_plan in plan_config_maps(kubectl_ns):
            return False
        assert rolled_out(kubectl_ns), "the old plan ConfigMap was pruned before the rollout finished"
        return True

    wait_for(old_plan_pruned, "the old plan ConfigMap to be pruned once the rollout has finished")
    ready = wait_for_condition(kubectl_ns, NAME, "Ready", "True", operator=operator)
    assert condition(ready, "Progressing")["reason"] != "DownloadingNewRevision"
    assert get_cr(kubectl_ns, NAME)["status"]["plan"]["weightsRevision"] == NEW_REVISION
