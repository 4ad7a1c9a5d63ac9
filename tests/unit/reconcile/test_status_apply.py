"""The shape of status writes (kmock): server-side apply per writer, the managed-fields move, record before scale.

kmock stores applies with merge semantics (no managed fields, no list-map merge): these tests assert the
requests the operator sends; e2e/test_status_ownership.py checks what the real API server makes of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kmock_support import NAMESPACE, NOW, SsaEmulator, in_thread, sample, store

from gptoss_operator import names
from gptoss_operator.autoscaling.controller import Autoscaler
from gptoss_operator.autoscaling.runner import KubeAutoscalerApi
from gptoss_operator.autoscaling.signals import MetricsSample
from gptoss_operator.builders.context import server_selector
from gptoss_operator.kube import APPLY_CONTENT_TYPE, JSON_PATCH_CONTENT_TYPE, Kube
from gptoss_operator.reconcile import RECONCILE_CONDITIONS, Reconciler
from gptoss_operator.settings import OperatorSettings
from gptoss_operator.status import OWNED_KEYS
from gptoss_operator.status_ownership import condition_key

Json = dict[str, Any]
NAME = "gpt-oss-20b"
CR_PATH = f"/apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}"
STATUS_WRITE = f"patch {CR_PATH}/status"
SCALE_WRITE = f"patch {CR_PATH}/scale"
LIMITED = {"type": names.COND_CAPACITY_LIMITED, "status": "False", "reason": "WithinCapacity", "message": ""}


class JsonPatchEmulator(SsaEmulator):
    """kmock with JSON patches of metadata (`replace` ops only), as the managed-fields move sends."""

    async def _handle(self, request: Any) -> Any:
        if "json-patch" in request.headers.get("Content-Type", ""):
            meta = {op["path"].removeprefix("/metadata/"): op["value"] for op in request.data if op["op"] == "replace"}
            object.__setattr__(request, "data", {"metadata": meta})  # served as the merge patch it amounts to
        return await super()._handle(request)


pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=JsonPatchEmulator)]


def status_writes(kmock: Any) -> list[Any]:
    return list(kmock[STATUS_WRITE])


def assert_is_an_apply(request: Any, field_manager: str) -> Json:
    """The request is a forced server-side apply as `field_manager` with no precondition; returns its status."""
    assert request.headers["Content-Type"] == APPLY_CONTENT_TYPE
    assert request.params == {"fieldManager": field_manager, "force": "true"}
    body = request.data
    assert (body["apiVersion"], body["kind"]) == (names.API_VERSION, names.KIND)
    assert body["metadata"] == {"name": NAME, "namespace": NAMESPACE}  # no resourceVersion, nothing else
    return dict(body["status"])


# ------------------------------------------------------------------------------------------ reconcile
async def test_the_reconcile_applies_only_its_own_status_fields(kmock: Any, reconciler: Reconciler) -> None:
    cr = sample()
    cr["status"] = {"conditions": [LIMITED], "autoscaling": {"mode": "hpa"}}  # the autoscaler's
    store(kmock, cr)
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    [write] = status_writes(kmock)
    status = assert_is_an_apply(write, names.FIELD_MANAGER)
    assert set(status) <= set(OWNED_KEYS)
    assert {c["type"] for c in status["conditions"]} <= set(RECONCILE_CONDITIONS)
    assert names.COND_CAPACITY_LIMITED not in {c["type"] for c in status["conditions"]}


async def test_a_resync_with_nothing_changed_applies_nothing(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    first = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    again = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert first.status_patched and not again.status_patched
    assert len(status_writes(kmock)) == 1


async def test_old_merge_patch_managers_are_moved_once_then_the_status_is_applied(
    kmock: Any, reconciler: Reconciler
) -> None:
    legacy = {
        "manager": names.FIELD_MANAGER,
        "operation": "Update",
        "apiVersion": names.API_VERSION,
        "time": NOW,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:phase": {}, "f:conditions": {}, "f:autoscaling": {"f:mode": {}}}},
        "subresource": "status",
    }
    cr = sample()
    cr["metadata"]["managedFields"] = [legacy]
    cr["status"] = {"phase": "Ready", "conditions": [LIMITED], "autoscaling": {"mode": "hpa"}}
    store(kmock, cr)
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)

    [move] = [r for r in kmock if r.method == "PATCH" and str(r.url.path) == CR_PATH]
    assert move.headers["Content-Type"] == JSON_PATCH_CONTENT_TYPE
    ops = {op["path"]: op for op in json.loads(move.body)}
    assert ops["/metadata/resourceVersion"] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}
    entries = {e["manager"]: e for e in ops["/metadata/managedFields"]["value"]}
    assert {e["operation"] for e in entries.values()} == {"Apply"}
    assert entries[names.FIELD_MANAGER]["fieldsV1"] == {"f:status": {"f:phase": {}}}
    autoscaler = entries[names.FIELD_MANAGER_AUTOSCALER]["fieldsV1"]["f:status"]
    assert autoscaler == {
        "f:autoscaling": {"f:mode": {}},
        "f:conditions": {
            condition_key(LIMITED["type"]): {".": {}, "f:type": {}, "f:status": {}, "f:reason": {}, "f:message": {}}
        },
    }
    # The move, then the apply that removes what the reconcile no longer states.
    assert paths_of_writes(kmock)[-2:] == ["", "/status"]
    assert_is_an_apply(status_writes(kmock)[-1], names.FIELD_MANAGER)

    await in_thread(reconciler.reconcile, NAMESPACE, NAME)  # moved already: no second move, nothing to apply
    assert len([r for r in kmock if r.method == "PATCH" and str(r.url.path) == CR_PATH]) == 1
    assert len(status_writes(kmock)) == 1


# ----------------------------------------------------------------------------------------- autoscaler
class DataApi(KubeAutoscalerApi):
    """The production adapter with nodes and pods as data; status, scale and Events go to kmock."""

    def __init__(self, kube: Kube, nodes: list[Json], pods: list[Json]) -> None:
        super().__init__(kube)
        self._nodes, self._pods = nodes, pods

    def nodes(self) -> list[Json]:
        return self._nodes

    def active_pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[Json]:
        return self._pods


def busy_autoscaled_cr() -> Json:
    autoscaling = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targets": {"requestsRunningPerReplica": 2, "requestsWaitingPerReplica": 4, "kvCacheUtilization": 0.85},
        "scaleUp": {"stabilizationWindowSeconds": 0, "maxStepReplicas": 2},
    }
    return sample(replicas=1, autoscaling=autoscaling)


def autoscaler_over(kube: Kube) -> Autoscaler:
    node = {
        "metadata": {"name": "gpu-a", "labels": {names.GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}},
        "spec": {"taints": [{"key": names.GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {names.GPU_RESOURCE: "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    pod = {
        "metadata": {"name": f"{NAME}-server-1", "namespace": NAMESPACE, "uid": "p1", "labels": server_selector(NAME)},
        "spec": {
            "nodeName": "gpu-a",
            "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        },
    }

    async def busy(_url: str) -> MetricsSample:  # 8 running on one replica: scale up
        return MetricsSample(requests_waiting=0.0, requests_running=8.0, kv_cache_utilization=0.1)

    return Autoscaler(DataApi(kube, [node], [pod]), OperatorSettings(), busy, clock=lambda: 1_800_000_000.0)


def paths_of_writes(kmock: Any) -> list[str]:
    return [str(r.url.path).removeprefix(CR_PATH) for r in kmock if r.method == "PATCH"]


async def test_the_autoscaler_records_as_its_own_manager_before_it_scales(kmock: Any, kube: Kube) -> None:
    store(kmock, busy_autoscaled_cr())
    [outcome] = await autoscaler_over(kube).evaluate_all()
    assert outcome.applied == 3
    assert paths_of_writes(kmock) == ["/status", "/scale"]
    status = assert_is_an_apply(status_writes(kmock)[0], names.FIELD_MANAGER_AUTOSCALER)
    assert set(status) == {"autoscaling", "conditions"}
    assert {c["type"] for c in status["conditions"]} <= set(names.AUTOSCALER_CONDITIONS)


async def test_the_autoscaler_does_not_scale_when_it_could_not_record(kmock: Any, kube: Kube) -> None:
    store(kmock, busy_autoscaled_cr())
    kmock[STATUS_WRITE] << 500 << {"message": "etcd hiccup"}
    outcomes = await autoscaler_over(kube).evaluate_all()
    assert outcomes == []  # this deployment's round failed and is logged; the next round decides again
    assert paths_of_writes(kmock) == ["/status"]
    assert len(list(kmock[SCALE_WRITE])) == 0
