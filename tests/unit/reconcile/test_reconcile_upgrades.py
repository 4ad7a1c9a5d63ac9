"""The reconcile across operator versions (docs/upgrades.md): record, keep, report, opt in, throttle.

kmock stands in for the API server (merge semantics); "a new operator version" is a Reconciler with
another default image. Behaviour on the real control plane: e2e/test_upgrade.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from kmock_support import NAMESPACE, NOW, SsaEmulator, in_thread, sample, store

from gptoss_operator import names, upgrades
from gptoss_operator.kube import Kube
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

OLD_IMAGE = "registry.example/runtime:1.0"
NEW_IMAGE = "registry.example/runtime:2.0"


def operator(kube: Kube, image: str, **settings: Any) -> Reconciler:
    return Reconciler(kube, OperatorSettings(default_image=image, **settings), now=lambda: NOW)


def plain(value: Any) -> Any:
    """kmock's stored objects as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def cr_object(kmock: Any, name: str) -> dict[str, Any]:
    return dict(plain(kmock.objects[kmock.resource(f"{names.API_VERSION}/{names.PLURAL}"), NAMESPACE, name]))


def deployment(kmock: Any, name: str) -> dict[str, Any]:
    return dict(plain(kmock.objects[kmock.resource("apps/v1/deployments"), NAMESPACE, name]))


def server_images(kmock: Any, name: str) -> set[str]:
    return {c["image"] for c in deployment(kmock, name)["spec"]["template"]["spec"]["containers"]}


def update_condition(kmock: Any, name: str) -> dict[str, Any]:
    conditions = cr_object(kmock, name)["status"]["conditions"]
    return dict(next(c for c in conditions if c["type"] == names.COND_UPDATE_AVAILABLE))


def with_status_of(kmock: Any, cr: dict[str, Any]) -> dict[str, Any]:
    """`cr` as stored, carrying the status the reconcile wrote (kmock keeps the status patch on the object)."""
    return {**cr, "status": cr_object(kmock, cr["metadata"]["name"]).get("status", {})}


async def test_a_new_default_image_changes_no_pod_until_the_annotation_opts_in(kmock: Any, kube: Kube) -> None:
    cr = sample()
    name = cr["metadata"]["name"]
    store(kmock, cr)
    await in_thread(operator(kube, OLD_IMAGE).reconcile, NAMESPACE, name)
    assert cr_object(kmock, name)["status"]["runtime"]["image"] == OLD_IMAGE
    assert update_condition(kmock, name)["status"] == "False"
    template_before = deployment(kmock, name)["spec"]["template"]

    upgraded = operator(kube, NEW_IMAGE)
    await in_thread(upgraded.reconcile, NAMESPACE, name)
    assert deployment(kmock, name)["spec"]["template"] == template_before
    condition = update_condition(kmock, name)
    assert (condition["status"], condition["reason"]) == ("True", upgrades.REASON_AWAITING_OPT_IN)
    assert f"{OLD_IMAGE} -> {NEW_IMAGE}" in condition["message"]

    opted = with_status_of(kmock, cr)
    opted["metadata"] = {**opted["metadata"], "annotations": {names.ANNOTATION_APPLY_UPDATE: "please"}}
    store(kmock, opted)
    await in_thread(upgraded.reconcile, NAMESPACE, name)
    assert server_images(kmock, name) == {NEW_IMAGE}
    assert cr_object(kmock, name)["status"]["runtime"]["appliedUpdate"] == "please"
    assert update_condition(kmock, name)["status"] == "False"


async def test_automatic_updates_roll_at_most_the_limit_at_once(kmock: Any, kube: Kube) -> None:
    names_ = ["alpha", "beta"]
    for name in names_:
        cr = sample(updatePolicy={"operatorUpdates": "Automatic"})
        cr["metadata"].update(name=name, uid=f"uid-{name}")
        store(kmock, cr)
        await in_thread(operator(kube, OLD_IMAGE).reconcile, NAMESPACE, name)

    upgraded = operator(kube, NEW_IMAGE, max_concurrent_rollouts=1)
    for name in names_:
        await in_thread(upgraded.reconcile, NAMESPACE, name)
    assert server_images(kmock, "alpha") == {NEW_IMAGE}  # kmock's Deployment never finishes: it keeps the slot
    assert server_images(kmock, "beta") == {OLD_IMAGE}
    waiting = update_condition(kmock, "beta")
    assert (waiting["status"], waiting["reason"]) == ("True", upgrades.REASON_AWAITING_ROLLOUT_SLOT)
    assert f"{NAMESPACE}/alpha" in waiting["message"]
