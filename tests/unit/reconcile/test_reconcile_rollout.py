"""The reconcile's rollout decisions end to end on kmock: download before roll, old plans kept, then pruned.

kmock has no controllers: the test plays the Job and Deployment controllers by writing their status.
Behaviour on the real control plane: e2e/test_rollout.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from kmock_support import NAMESPACE, SsaEmulator, in_thread, sample, store

from gptoss_operator import names, status
from gptoss_operator.reconcile import Reconciler

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAME = "gpt-oss-20b"
OLD, NEW = "a" * 40, "b" * 40


def plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def objects(kmock: Any, resource: str) -> dict[str, dict[str, Any]]:
    wanted = kmock.resource(resource)
    return {
        key[2]: plain(obj)
        for key, obj in kmock.objects.items()
        if key[0] == wanted and key[1] == NAMESPACE and not obj.deleted
    }


def set_status(kmock: Any, resource: str, name: str, new_status: dict[str, Any]) -> None:
    key = (kmock.resource(resource), NAMESPACE, name)
    kmock.objects[key] = {**plain(kmock.objects[key]), "status": new_status}


def with_revision(kmock: Any, revision: str, generation: int) -> dict[str, Any]:
    cr = sample()
    cr["spec"]["weights"]["huggingFace"]["revision"] = revision
    cr["metadata"]["generation"] = generation
    stored = objects(kmock, f"{names.API_VERSION}/{names.PLURAL}").get(NAME)
    if stored is not None:
        cr["status"] = stored.get("status", {})
    return cr


def deployment(kmock: Any) -> dict[str, Any]:
    return objects(kmock, "apps/v1/deployments")[NAME]


def mounted_plan(kmock: Any) -> str:
    volumes = deployment(kmock)["spec"]["template"]["spec"]["volumes"]
    return str(next(v["configMap"]["name"] for v in volumes if v["name"] == "plan"))


def plan_config_maps(kmock: Any) -> set[str]:
    return {name for name in objects(kmock, "v1/configmaps") if name.startswith(f"{NAME}-plan-")}


def new_job(kmock: Any, old_jobs: set[str]) -> str:
    (name,) = set(objects(kmock, "batch/v1/jobs")) - old_jobs
    return name


def progressing(kmock: Any) -> dict[str, Any]:
    cr = objects(kmock, f"{names.API_VERSION}/{names.PLURAL}")[NAME]
    return dict(next(c for c in cr["status"]["conditions"] if c["type"] == names.COND_PROGRESSING))


def serving(replicas: int = 1, updated: int = 1) -> dict[str, Any]:
    return {"replicas": replicas, "updatedReplicas": updated, "availableReplicas": replicas, "readyReplicas": replicas}


async def test_a_new_revision_rolls_after_its_download_and_the_old_plan_goes_after_the_rollout(
    kmock: Any, reconciler: Reconciler
) -> None:
    store(kmock, with_revision(kmock, OLD, 1))
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    (old_job,) = objects(kmock, "batch/v1/jobs")
    set_status(kmock, "batch/v1/jobs", old_job, {"succeeded": 1})
    set_status(kmock, "apps/v1/deployments", NAME, serving())
    old_template, old_plan = deployment(kmock)["spec"]["template"], mounted_plan(kmock)

    store(kmock, with_revision(kmock, NEW, 2))
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)

    job = new_job(kmock, {old_job})
    assert deployment(kmock)["spec"]["template"] == old_template  # held: the old pods keep serving
    assert (progressing(kmock)["reason"], progressing(kmock)["status"]) == (
        status.REASON_DOWNLOADING_NEW_REVISION,
        "True",
    )
    assert job in progressing(kmock)["message"]
    assert old_plan in plan_config_maps(kmock) and len(plan_config_maps(kmock)) == 2

    set_status(kmock, "batch/v1/jobs", job, {"succeeded": 1})
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert deployment(kmock)["spec"]["template"] != old_template  # the download is there: the pods roll
    assert mounted_plan(kmock) != old_plan
    assert old_plan in plan_config_maps(kmock)  # old pods may still restart during the rollout

    set_status(kmock, "apps/v1/deployments", NAME, serving(replicas=2, updated=1))  # an old pod remains
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert old_plan in plan_config_maps(kmock)

    set_status(kmock, "apps/v1/deployments", NAME, serving())
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert plan_config_maps(kmock) == {mounted_plan(kmock)}
