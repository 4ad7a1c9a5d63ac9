"""A child the API server refuses does not stop the others; status names it with the API's reason; one Event."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_support import NAMESPACE, RequestLog, SsaEmulator, first_n, in_thread, sample, store

from gptoss_operator import names
from gptoss_operator.kube import ApiError, TransientApiError
from gptoss_operator.reconcile import Reconciler

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAME = "gpt-oss-20b"
STATUS_PATCH = f"patch /apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}/status"
SERVICE_APPLY = f"patch /api/v1/namespaces/{NAMESPACE}/services/{NAME}"
DEPLOYMENT_APPLY = f"patch /apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}"
REFUSAL = {"kind": "Status", "reason": "Invalid", "message": 'Service "gpt-oss-20b" is invalid: spec.ports'}


def children_condition(kmock: Any) -> dict[str, Any]:
    conditions = kmock[STATUS_PATCH][-1].data["status"]["conditions"]
    return next(c for c in conditions if c["type"] == names.COND_CHILDREN_APPLIED)


def warnings(kmock: Any) -> list[dict[str, Any]]:
    return [r.data for r in kmock["post"] if r.data.get("reason") == "ChildrenNotApplied"]


async def test_a_refused_child_does_not_stop_the_others(
    kmock: Any, reconciler: Reconciler, request_log: RequestLog
) -> None:
    store(kmock, sample())
    kmock[SERVICE_APPLY] << 422 << REFUSAL
    with pytest.raises(ApiError) as raised:
        await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert raised.value.code == 422
    assert len(kmock[DEPLOYMENT_APPLY]) == 1  # applied although the Service failed
    condition = children_condition(kmock)
    assert (condition["status"], condition["reason"]) == ("False", "Invalid")
    assert f"Service/{NAME}" in condition["message"] and "HTTP 422" in condition["message"]
    assert len(warnings(kmock)) == 1

    # The same refusal again (kmock stored the refused object: drop it so the apply is tried again, and give
    # the CR the status just written): the condition stays, no second Event.
    del kmock.objects[kmock.resource("v1/services"), NAMESPACE, NAME]
    store(kmock, {**sample(), "status": kmock[STATUS_PATCH][-1].data["status"]})
    with pytest.raises(ApiError):
        await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert len(warnings(kmock)) == 1


async def test_the_condition_clears_when_the_child_is_accepted(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    kmock[SERVICE_APPLY][first_n(1)] << 503 << {"kind": "Status", "reason": "ServiceUnavailable", "message": "x"}
    with pytest.raises(TransientApiError):
        await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert children_condition(kmock)["reason"] == "ServiceUnavailable"
    store(kmock, {**sample(), "status": kmock[STATUS_PATCH][-1].data["status"]})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert children_condition(kmock)["status"] == "True"


async def test_a_transient_failure_is_raised_before_a_permanent_one(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    kmock[SERVICE_APPLY] << 422 << REFUSAL
    kmock[DEPLOYMENT_APPLY] << 429 << {"kind": "Status", "reason": "TooManyRequests", "message": "slow down"}
    with pytest.raises(TransientApiError) as raised:
        await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert raised.value.code == 429
    message = children_condition(kmock)["message"]
    assert f"Service/{NAME}" in message and f"Deployment/{NAME}" in message
