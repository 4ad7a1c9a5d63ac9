"""API faults (409, 429, 5xx, lost connection) injected with kmock: retries, never a crash."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kmock_support import NAMESPACE, RequestLog, SsaEmulator, first_n, in_thread, sample, store
from kubernetes import client

from gptoss_operator import handlers
from gptoss_operator.kube import Kube, TransientApiError, without_client_retries
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAME = "gpt-oss-20b"
STATUS_PATCH = f"patch /apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}/status"
CR_GET = f"get /apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}"
DEPLOYMENT_APPLY = f"patch /apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}"
CHILD_LIST = f"get /apis/apps/v1/namespaces/{NAMESPACE}/deployments"


async def test_reconcile_applies_children_then_a_resync_writes_nothing(
    kmock: Any, reconciler: Reconciler, request_log: RequestLog
) -> None:
    store(kmock, sample())
    first = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert ("Deployment", NAME) in first.applied
    assert first.status_patched
    assert "apply" in request_log.verbs()

    request_log.calls.clear()
    again = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert again.applied == () and again.pruned == () and not again.status_patched
    writes = [verb for verb in request_log.verbs() if verb not in ("get", "list", "discover")]
    assert writes == []


async def test_invalid_spec_touches_no_child(kmock: Any, reconciler: Reconciler, request_log: RequestLog) -> None:
    store(kmock, sample(gpu={"product": "NVIDIA-H100-80GB-HBM3", "count": 2}))  # 20b on 2 GPUs: planner says no
    outcome = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert outcome.result == "invalid"
    assert request_log.verbs() == ["get", "apply", "create"]  # read CR, apply status, post the Event
    patch = kmock[STATUS_PATCH][-1].data
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "gpu.count" in ready["message"]
    event = kmock["post"][-1].data
    assert (event["type"], event["reason"]) == ("Warning", "InvalidSpec")


@pytest.mark.parametrize("code", [409, 429, 500, 503])
@pytest.mark.parametrize("where", [CR_GET, CHILD_LIST, DEPLOYMENT_APPLY, STATUS_PATCH])
async def test_transient_fault_becomes_temporary_error(
    kmock: Any, reconciler: Reconciler, code: int, where: str
) -> None:
    store(kmock, sample())
    kmock[where][first_n(1)] << code << {"kind": "Status", "message": f"injected {code}"}
    with pytest.raises(kopf.TemporaryError) as raised:
        await in_thread(handlers.reconcile_or_retry, reconciler, NAMESPACE, NAME)
    assert f"HTTP {code}" in str(raised.value)
    assert raised.value.delay is not None and raised.value.delay > 0

    # The fault is gone: Kopf's retry succeeds and writes the status.
    await in_thread(handlers.reconcile_or_retry, reconciler, NAMESPACE, NAME)
    assert kmock[STATUS_PATCH][-1].data["status"]["observedGeneration"] == 1


async def test_throttling_honours_retry_after(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    kmock[CR_GET][first_n(1)] << 429 << kmock.headers({"Retry-After": "7"}) << {"message": "slow down"}
    with pytest.raises(kopf.TemporaryError) as raised:
        await in_thread(handlers.reconcile_or_retry, reconciler, NAMESPACE, NAME)
    assert raised.value.delay == 7


async def test_refused_request_is_permanent_but_still_retried_later(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    kmock[DEPLOYMENT_APPLY][first_n(1)] << 422 << {"message": "Deployment.apps is invalid"}
    with pytest.raises(kopf.TemporaryError) as raised:
        await in_thread(handlers.reconcile_or_retry, reconciler, NAMESPACE, NAME)
    assert raised.value.delay == handlers.PERMANENT_ERROR_DELAY
    assert "HTTP 422" in str(raised.value)


async def test_lost_connection_is_transient(request_log: RequestLog) -> None:
    config = without_client_retries(
        client.Configuration(host="http://127.0.0.1:9")
    )  # nothing listens on the discard port
    kube = Kube(client.ApiClient(config), on_request=request_log)
    reconciler = Reconciler(kube, OperatorSettings())
    with pytest.raises(kopf.TemporaryError):
        await in_thread(handlers.reconcile_or_retry, reconciler, NAMESPACE, NAME)
    assert request_log.calls[-1] == ("get", "connection-error")


async def test_trigger_never_raises_and_recovers(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    kmock[STATUS_PATCH][first_n(1)] << 500 << {"message": "etcd hiccup"}
    await in_thread(reconciler.trigger, NAMESPACE, NAME)  # logged, not raised
    assert len(kmock[STATUS_PATCH]) == 1
    await in_thread(reconciler.trigger, NAMESPACE, NAME)
    assert kmock[STATUS_PATCH][-1].data["status"]["phase"]


async def test_requests_are_counted_by_verb_and_code(
    kmock: Any, reconciler: Reconciler, request_log: RequestLog
) -> None:
    store(kmock, sample())
    kmock[STATUS_PATCH][first_n(1)] << 409 << {"message": "conflict"}
    with pytest.raises(TransientApiError):
        await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert ("get", "200") in request_log.calls
    assert ("apply", "200") in request_log.calls
    assert ("apply", "409") in request_log.calls  # the status apply


async def test_deleted_cr_is_a_no_op(reconciler: Reconciler, request_log: RequestLog) -> None:
    outcome = await in_thread(reconciler.reconcile, NAMESPACE, "gone")
    assert outcome.result == "gone"
    assert request_log.calls == [("get", "404")]
