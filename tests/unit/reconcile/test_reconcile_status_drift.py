"""A status written by another operator version never freezes a CR: only metadata and spec are validated."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_support import NAMESPACE, SsaEmulator, in_thread, sample, store

from gptoss_operator import metrics, names
from gptoss_operator.reconcile import RECONCILE_CONDITIONS, Reconciler

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAME = "gpt-oss-20b"
STATUS_PATCH = f"patch /apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}/status"

FUTURE_STATUS: dict[str, Any] = {
    "phase": "Warming",  # a phase this version does not know
    "shardsReady": 3,  # a key this version does not know
    # A changed plan shape (kmock cannot merge a dict into a scalar, so the changes here are new keys and types).
    "plan": {"shards": [{"gpus": [0, 1]}], "tensorParallelSize": "two"},
    "endpoints": {"openai": "http://x/v1", "websocket": "ws://x"},
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "", "lastTransitionTime": "x"},
        {"type": "QuantumEntangled", "status": "True", "futureField": {"a": 1}},
        "not even an object",
    ],
    "autoscaling": {"mode": "operator", "history": "unreadable"},
}


def ready(patch_status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in patch_status["conditions"] if c["type"] == names.COND_READY)


async def test_status_from_a_future_version_is_reconciled_not_invalid(kmock: Any, reconciler: Reconciler) -> None:
    cr = sample()
    cr["status"] = FUTURE_STATUS
    store(kmock, cr)
    outcome = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert outcome.result == metrics.RESULT_SUCCESS
    assert ("Deployment", NAME) in outcome.applied
    written = kmock[STATUS_PATCH][-1].data["status"]
    assert written["phase"] != names.PHASE_FAILED
    assert ready(written)["reason"] != names.REASON_INVALID_SPEC
    # A condition this version does not know is not restated: the apply states only the reconcile's own
    # conditions, and the server's list-map merge leaves the other entries to their managers.
    assert {c["type"] for c in written["conditions"]} <= set(RECONCILE_CONDITIONS)


# kmock cannot merge an object into a null, so nulls sit where the reconcile writes a list or nothing.
@pytest.mark.parametrize("status", [{"conditions": None}, {"conditions": None, "autoscaling": None}])
async def test_null_conditions_or_status_reconcile(kmock: Any, reconciler: Reconciler, status: Any) -> None:
    cr = sample()
    cr["status"] = status
    store(kmock, cr)
    outcome = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert outcome.result == metrics.RESULT_SUCCESS
    written = kmock[STATUS_PATCH][-1].data["status"]
    assert ready(written)["reason"] != names.REASON_INVALID_SPEC


async def test_an_invalid_spec_is_still_invalid_with_a_future_status(kmock: Any, reconciler: Reconciler) -> None:
    cr = sample(gpu={"product": "NVIDIA-H100-80GB-HBM3", "count": 2})
    cr["status"] = FUTURE_STATUS
    store(kmock, cr)
    outcome = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert outcome.result == metrics.RESULT_INVALID
    assert "gpu.count" in ready(kmock[STATUS_PATCH][-1].data["status"])["message"]
