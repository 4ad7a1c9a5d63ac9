"""The reconcile with a volume per replica (the default cache): a new revision rolls at once, and a rollout
that leaves nothing serving says so. kmock has no controllers: the test writes the Deployment's status as its
controller would. Behaviour on the real control plane: e2e/test_realpods.py."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_support import NAMESPACE, SsaEmulator, in_thread, store
from test_reconcile_rollout import NAME, NEW, OLD, deployment, objects, plain, progressing, serving, with_revision

from gptoss_operator import diagnosis, names
from gptoss_operator.reconcile import Reconciler

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]


def per_replica(kmock: Any, revision: str, generation: int) -> dict[str, Any]:
    cr = with_revision(kmock, revision, generation)
    del cr["spec"]["weights"]["cache"]["accessMode"]  # the default: each pod downloads into its own volume
    return cr


def set_deployment(kmock: Any, revision: int, new_status: dict[str, Any]) -> None:
    """What the Deployment controller writes: the revision annotation and the status."""
    key = (kmock.resource("apps/v1/deployments"), NAMESPACE, NAME)
    obj = plain(kmock.objects[key])
    annotations = {**(obj["metadata"].get("annotations") or {}), diagnosis.REVISION_ANNOTATION: str(revision)}
    kmock.objects[key] = {**obj, "metadata": {**obj["metadata"], "annotations": annotations}, "status": new_status}


def gpu_node(kmock: Any, gpus: int) -> None:
    node = {
        "metadata": {"name": "gpu-0", "labels": {names.GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "64", "memory": "512Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    kmock.objects[kmock.resource("v1/nodes"), None, "gpu-0"] = node


def rolling(generation: int) -> dict[str, Any]:
    """Mid-rollout of one replica with maxSurge 0: the old pod is gone, the new one downloads."""
    progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    return {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "conditions": [progressing]}


@pytest.mark.parametrize(("gpus", "strategy"), [(1, (0, 1)), (2, (1, 0))], ids=["no-spare-gpu", "a-spare-gpu"])
async def test_a_new_revision_rolls_at_once_and_replacing_the_only_replica_without_a_surge_says_it_is_an_outage(
    kmock: Any, reconciler: Reconciler, gpus: int, strategy: tuple[int, int]
) -> None:
    gpu_node(kmock, gpus)
    store(kmock, per_replica(kmock, OLD, 1))
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert objects(kmock, "batch/v1/jobs") == {}  # no Job: the pods download
    set_deployment(kmock, 1, {**serving(), "observedGeneration": 1})
    old_template = deployment(kmock)["spec"]["template"]

    store(kmock, per_replica(kmock, NEW, 2))
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    live = deployment(kmock)
    assert live["spec"]["template"] != old_template  # nothing to download ahead into: it rolls now
    (fetch,) = live["spec"]["template"]["spec"]["initContainers"]
    assert NEW in fetch["command"]
    # A spare GPU: a surge pod downloads and starts while the old pod serves; none: replaced in place.
    surge, unavailable = strategy
    assert live["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": surge, "maxUnavailable": unavailable}

    set_deployment(kmock, 2, rolling(int(live["metadata"].get("generation") or 2)))
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    said = progressing(kmock)
    if surge:
        assert (said["status"], said["reason"]) == ("True", "ReplicasStarting"), said
        return
    assert (said["status"], said["reason"]) == ("True", diagnosis.REASON_ROLLOUT_OUTAGE), said
    assert "nothing serves until then" in said["message"]
    assert "spec.weights.cache.accessMode: ReadWriteMany" in said["message"]


TOKEN = {"huggingFace": {"tokenSecretRef": {"name": "hf", "key": "token"}}}  # no cache: a volume per replica
MOUNT_FAILED = 'MountVolume.SetUp failed for volume "hf-token" : references non-existent secret key: token'


def put(kmock: Any, resource: str, obj: dict[str, Any]) -> None:
    kmock.objects[kmock.resource(resource), NAMESPACE, obj["metadata"]["name"]] = obj


def weights_ready(kmock: Any) -> dict[str, Any]:
    cr = objects(kmock, f"{names.API_VERSION}/{names.PLURAL}")[NAME]
    return dict(next(c for c in cr["status"]["conditions"] if c["type"] == names.COND_WEIGHTS_READY))


async def test_a_marked_secret_without_the_key_is_told_from_the_kubelets_failed_mount(
    kmock: Any, reconciler: Reconciler
) -> None:
    cr = with_revision(kmock, OLD, 1)
    cr["spec"]["weights"] = {**TOKEN}
    store(kmock, cr)
    secret_meta = {"name": "hf", "namespace": NAMESPACE, "labels": {names.LABEL_WEIGHTS_TOKEN: "true"}}
    put(kmock, "v1/secrets", {"metadata": secret_meta, "data": {"other": "c2VjcmV0"}})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    labels = deployment(kmock)["spec"]["selector"]["matchLabels"]
    stuck = {
        "metadata": {"name": f"{NAME}-abc", "namespace": NAMESPACE, "uid": "pod-uid-1", "labels": labels},
        "spec": {"nodeName": "gpu-0"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": "fetch", "state": {"waiting": {"reason": "PodInitializing"}}}],
        },
    }
    put(kmock, "v1/pods", stuck)
    event = {
        "metadata": {"name": f"{NAME}-abc.1", "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": f"{NAME}-abc", "uid": "pod-uid-1"},
        "reason": "FailedMount",
        "type": "Warning",
        "message": MOUNT_FAILED,
        "lastTimestamp": "2026-11-25T10:00:05Z",
    }
    put(kmock, "v1/events", event)
    store(kmock, with_revision(kmock, OLD, 1) | {"spec": cr["spec"]})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)

    said = weights_ready(kmock)
    assert (said["status"], said["reason"]) == ("False", diagnosis.REASON_TOKEN_SECRET_KEY_MISSING), said
    assert "Secret hf" in said["message"] and "has no key token" in said["message"]
    asked = [r for r in kmock["get"] if str(r.url).split("?")[0].endswith(f"/namespaces/{NAMESPACE}/events")]
    assert asked and "involvedObject.uid=pod-uid-1" in str(asked[-1].url).replace("%3D", "=").replace("%2C", ",")
