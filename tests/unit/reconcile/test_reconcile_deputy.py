"""No confused deputy (docs/security.md): unmarked token Secrets and unlisted endpoints are refused with a
condition and an Event, Secret metadata is read without its data, and a same-named object is never adopted."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_support import NAMESPACE, NOW, SsaEmulator, in_thread, sample, store

from gptoss_operator import names
from gptoss_operator.kube import PARTIAL_METADATA_ACCEPT, Kube
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAME = "gpt-oss-20b"
STATUS_PATCH = f"patch /apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}/status"
SECRET_GET = f"get /api/v1/namespaces/{NAMESPACE}/secrets/hf"
SERVICE_PATH = f"/api/v1/namespaces/{NAMESPACE}/services/{NAME}"
TOKEN = {"huggingFace": {"tokenSecretRef": {"name": "hf", "key": "token"}}}
MARK = {names.LABEL_WEIGHTS_TOKEN: names.LABEL_WEIGHTS_TOKEN_VALUE}


def put_secret(kmock: Any, labels: dict[str, str]) -> None:
    meta = {"name": "hf", "namespace": NAMESPACE, "labels": labels}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": {"token": "c2VjcmV0"}}
    kmock.objects[kmock.resource("v1/secrets"), NAMESPACE, "hf"] = secret


def condition(kmock: Any, type_: str) -> dict[str, Any]:
    conditions = kmock[STATUS_PATCH][-1].data["status"]["conditions"]
    return next(c for c in conditions if c["type"] == type_)


def events(kmock: Any, reason: str) -> list[dict[str, Any]]:
    return [r.data for r in kmock["post"] if r.data.get("reason") == reason]


def child_applies(kmock: Any) -> list[Any]:
    return [r for r in kmock["patch"] if not str(r.url).split("?")[0].endswith("/status")]


async def test_an_unmarked_token_secret_is_refused_and_nothing_is_created(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample(weights=TOKEN))
    put_secret(kmock, {"team": "ml"})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    weights = condition(kmock, names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == ("False", names.REASON_TOKEN_SECRET_NOT_MARKED)
    assert "spec.weights.huggingFace.tokenSecretRef" in weights["message"]
    assert f"kubectl label secret hf -n {NAMESPACE} gptoss.io/weights-token=true" in weights["message"]
    assert condition(kmock, names.COND_READY)["reason"] == names.REASON_TOKEN_SECRET_NOT_MARKED
    assert child_applies(kmock) == []  # no Job, no pod: the token is mounted nowhere
    assert len(events(kmock, names.REASON_TOKEN_SECRET_NOT_MARKED)) == 1
    # Only the Secret's metadata was asked for.
    assert kmock[SECRET_GET][-1].headers["Accept"] == PARTIAL_METADATA_ACCEPT

    # Unchanged on the next reconcile: no second Event.
    store(kmock, {**sample(weights=TOKEN), "status": kmock[STATUS_PATCH][-1].data["status"]})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert len(events(kmock, names.REASON_TOKEN_SECRET_NOT_MARKED)) == 1


async def test_a_marked_token_secret_is_used(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample(weights=TOKEN))
    put_secret(kmock, MARK)
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert condition(kmock, names.COND_WEIGHTS_READY)["reason"] != names.REASON_TOKEN_SECRET_NOT_MARKED
    assert child_applies(kmock)


async def test_an_endpoint_off_the_allow_list_is_refused(kmock: Any, reconciler: Reconciler) -> None:
    weights = {"huggingFace": {"endpoint": "https://collector.example", **TOKEN["huggingFace"]}}
    store(kmock, sample(weights=weights))
    put_secret(kmock, MARK)
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    refused = condition(kmock, names.COND_WEIGHTS_READY)
    assert (refused["status"], refused["reason"]) == ("False", names.REASON_ENDPOINT_NOT_ALLOWED)
    assert "spec.weights.huggingFace.endpoint" in refused["message"]
    assert "https://huggingface.co" in refused["message"]
    assert child_applies(kmock) == []
    assert len(kmock[SECRET_GET]) == 0


async def test_a_same_named_object_of_someone_else_is_left_untouched(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample())
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NAMESPACE}}
    kmock.objects[kmock.resource("v1/services"), NAMESPACE, NAME] = theirs
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert [r for r in child_applies(kmock) if str(r.url).split("?")[0].endswith(SERVICE_PATH)] == []
    assert len(child_applies(kmock)) > 0  # the other children are applied
    children = condition(kmock, names.COND_CHILDREN_APPLIED)
    assert (children["status"], children["reason"]) == ("False", names.REASON_ADOPTION_REFUSED)
    assert f"Service/{NAME}" in children["message"] and "delete or rename" in children["message"]
    assert len(events(kmock, names.REASON_ADOPTION_REFUSED)) == 1

    store(kmock, {**sample(), "status": kmock[STATUS_PATCH][-1].data["status"]})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert len(events(kmock, names.REASON_ADOPTION_REFUSED)) == 1
    assert "ownerReferences" not in kmock.objects[kmock.resource("v1/services"), NAMESPACE, NAME]["metadata"]


async def test_without_cluster_wide_pod_reads_no_pod_outside_the_namespace_is_read(kmock: Any, kube: Kube) -> None:
    store(kmock, sample())
    reconciler = Reconciler(kube, OperatorSettings(cluster_wide_pod_reads=False), now=lambda: NOW)
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    capacity = condition(kmock, names.COND_CAPACITY_AVAILABLE)
    assert (capacity["status"], capacity["reason"]) == ("Unknown", "PodsNotReadable")
    pod_lists = [str(r.url) for r in kmock["get"] if "/pods" in str(r.url)]
    assert pod_lists and all(f"/namespaces/{NAMESPACE}/pods" in url for url in pod_lists)
    assert not [r for r in kmock["get"] if "/nodes" in str(r.url)]
