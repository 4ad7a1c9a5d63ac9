"""Rollouts without outages: content-named plan ConfigMaps, download before roll, old plans kept (pure)."""

from __future__ import annotations

import copy
from typing import Any

from builders_support import SETTINGS, children, cr_from, one, sample

from gptoss_operator import names, rollout, status
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.planner import plan

Json = dict[str, Any]


def with_revision(revision: str, **spec: Any) -> GptOssDeployment:
    body = sample("gpt-oss-20b").model_dump(by_alias=True, exclude_none=True)
    body["spec"]["weights"]["huggingFace"]["revision"] = revision
    body["spec"].update(spec)
    return cr_from(body["spec"], name="gpt-oss-20b")


def live_from(built: list[Json], *, job_done: bool = True, available: int = 1, rolled_out: bool = True) -> list[Json]:
    """The children as the API server would hold them after `built` was applied and the controllers acted."""
    live = copy.deepcopy(built)
    for obj in live:
        if obj["kind"] == "Job":
            obj["status"] = {"succeeded": 1} if job_done else {"active": 1}
        if obj["kind"] == "Deployment":
            replicas = obj["spec"]["replicas"]
            obj["metadata"]["generation"] = 2
            obj["spec"]["template"]["metadata"]["creationTimestamp"] = None  # the server adds it
            obj["status"] = {
                "observedGeneration": 2 if rolled_out else 1,
                "replicas": replicas,
                "updatedReplicas": replicas if rolled_out else 0,
                "availableReplicas": available,
            }
        if obj["kind"] == "ConfigMap":
            obj["metadata"]["resourceVersion"] = "7"
            obj["metadata"]["annotations"]["gptoss.io/applied-hash"] = "0123"  # the reconcile's own annotation
    return live


def deployment_of(objects: list[Json]) -> Json:
    return one(objects, "Deployment")


def config_maps(objects: list[Json]) -> dict[str, Json]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ConfigMap"}


def pod_mounting(config_map: str) -> Json:
    return {
        "metadata": {"name": "p"},
        "spec": {"volumes": [{"name": "plan", "configMap": {"name": config_map}}]},
        "status": {"phase": "Running"},
    }


# --------------------------------------------------------------------------------- plan ConfigMaps
def test_the_plan_config_map_is_immutable_and_named_by_its_content() -> None:
    built = children(sample("gpt-oss-20b"))
    config_map = one(built, "ConfigMap")
    name = config_map["metadata"]["name"]
    plan_hash = config_map["metadata"]["annotations"][names.ANNOTATION_PLAN_HASH]

    assert config_map["immutable"] is True
    assert name == f"gpt-oss-20b-plan-{plan_hash[:10]}"
    volumes = deployment_of(built)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "plan", "configMap": {"name": name}} in volumes


def test_a_plan_change_makes_a_new_config_map_and_the_same_plan_the_same_one() -> None:
    first = one(children(with_revision("a" * 40)), "ConfigMap")["metadata"]["name"]
    again = one(children(with_revision("a" * 40)), "ConfigMap")["metadata"]["name"]
    other = one(children(with_revision("b" * 40)), "ConfigMap")["metadata"]["name"]
    assert first == again != other


# ------------------------------------------------------------------------------ download before roll
def test_a_new_revision_keeps_the_live_pod_template_while_its_job_runs() -> None:
    old = children(with_revision("a" * 40))
    new = children(with_revision("b" * 40, replicas=2))
    live = live_from(old)

    decision = rollout.decide(new, live)

    held = deployment_of(decision.children)
    live_template = copy.deepcopy(deployment_of(live)["spec"]["template"])
    del live_template["metadata"]["creationTimestamp"]
    assert held["spec"]["template"] == live_template
    assert held["spec"]["replicas"] == 2  # the rest of the Deployment follows the spec
    new_job = one(new, "Job")["metadata"]["name"]
    assert decision.held is not None and new_job in decision.held
    assert one([c for c in decision.children if c["kind"] == "Job"], "Job")["metadata"]["name"] == new_job


def test_the_template_switches_once_the_new_revisions_job_completed() -> None:
    old = children(with_revision("a" * 40))
    new = children(with_revision("b" * 40))
    live = [obj for obj in live_from(old) if obj["kind"] != "Job"] + [
        {**one(new, "Job"), "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    ]

    decision = rollout.decide(new, live)

    assert decision.held is None
    assert deployment_of(decision.children) == deployment_of(new)


def test_a_running_job_of_the_new_revision_still_holds() -> None:
    old = children(with_revision("a" * 40))
    new = children(with_revision("b" * 40))
    live = live_from(old) + live_from([one(new, "Job")], job_done=False)

    assert rollout.decide(new, live).held is not None


def test_nothing_is_held_when_no_pod_serves() -> None:
    old = children(with_revision("a" * 40))
    new = children(with_revision("b" * 40))

    decision = rollout.decide(new, live_from(old, available=0))

    assert decision.held is None
    assert deployment_of(decision.children) == deployment_of(new)


def test_a_change_that_needs_no_new_weights_rolls_at_once() -> None:
    old = children(with_revision("a" * 40))
    new = children(with_revision("a" * 40, engine={"maxSeqLen": 16384}))
    assert deployment_of(old)["spec"]["template"] != deployment_of(new)["spec"]["template"]

    decision = rollout.decide(new, live_from(old))

    assert decision.held is None
    assert deployment_of(decision.children) == deployment_of(new)


def test_the_first_rollout_is_never_held() -> None:
    new = children(with_revision("b" * 40))
    assert rollout.decide(new, []).children == new


def test_an_existing_claim_has_no_download_to_wait_for() -> None:
    spec = {"model": "gpt-oss-20b", "gpu": {"product": "NVIDIA-H100-80GB-HBM3"}}
    old = children(cr_from({**spec, "weights": {"existingClaim": {"claimName": "w"}}}))
    new = children(cr_from({**spec, "weights": {"existingClaim": {"claimName": "w2"}}}))
    assert rollout.decide(new, live_from(old)).held is None


# ---------------------------------------------------------------------------- old plans are kept
def test_the_old_plan_is_kept_while_the_template_is_held_and_the_new_one_is_created() -> None:
    old = children(with_revision("a" * 40))
    new = children(with_revision("b" * 40))
    old_cm, new_cm = one(old, "ConfigMap"), one(new, "ConfigMap")

    decision = rollout.decide(new, live_from(old))

    kept = config_maps(decision.children)
    assert set(kept) == {old_cm["metadata"]["name"], new_cm["metadata"]["name"]}
    assert kept[old_cm["metadata"]["name"]] == old_cm  # exactly as built: applying it changes nothing
    assert decision.kept_plans == (old_cm["metadata"]["name"],)


def test_the_old_plan_is_kept_until_the_deployment_has_rolled_out() -> None:
    old = children(with_revision("a" * 40, engine={"maxSeqLen": 16384}))
    new = children(with_revision("a" * 40))
    old_name = one(old, "ConfigMap")["metadata"]["name"]
    rolling = [obj for obj in live_from(old) if obj["kind"] != "Deployment"] + live_from(
        [deployment_of(new)], rolled_out=False
    )
    assert old_name in config_maps(rollout.decide(new, rolling).children)  # old pods may still restart

    done = [obj for obj in live_from(old) if obj["kind"] != "Deployment"] + live_from([deployment_of(new)])
    assert old_name not in config_maps(rollout.decide(new, done).children)  # pruned afterwards
    assert rollout.decide(new, done).kept_plans == ()


def test_a_pod_that_still_mounts_an_old_plan_keeps_it() -> None:
    old = children(with_revision("a" * 40, engine={"maxSeqLen": 16384}))
    new = children(with_revision("a" * 40))
    old_name = one(old, "ConfigMap")["metadata"]["name"]
    done = [obj for obj in live_from(old) if obj["kind"] != "Deployment"] + live_from([deployment_of(new)])

    assert old_name in config_maps(rollout.decide(new, done, [pod_mounting(old_name)]).children)
    gone = {**pod_mounting(old_name), "status": {"phase": "Succeeded"}}
    assert old_name not in config_maps(rollout.decide(new, done, [gone]).children)


def test_the_fixed_name_plan_of_an_older_operator_is_kept_while_mounted() -> None:
    new = children(with_revision("a" * 40))
    legacy = copy.deepcopy(one(new, "ConfigMap"))
    legacy["metadata"]["name"] = "gpt-oss-20b-plan"
    del legacy["immutable"]
    live_deployment = copy.deepcopy(deployment_of(new))
    live_deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "gpt-oss-20b-plan"
    live_deployment["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH] = "older"
    live = [*live_from([one(new, "ConfigMap"), one(new, "Job")]), legacy, *live_from([live_deployment])]

    assert "gpt-oss-20b-plan" in rollout.decide(new, live).kept_plans
    assert rollout.stale_plan_config_maps(new, live) == ["gpt-oss-20b-plan"]


# ------------------------------------------------------------------------------------------ status
def test_status_says_the_rollout_waits_for_the_download() -> None:
    cr = with_revision("b" * 40)
    serving_plan = plan(cr.spec, SETTINGS)
    obs = status.Observation(
        generation=3,
        desired_replicas=1,
        selector="",
        service_name="gpt-oss-20b",
        template_annotations={},
        deployment=None,
        rollout_held="downloading the weights the new pod template needs (Job x)",
    )
    result = status.compute_status(obs, serving_plan, None, namespace="ns", cluster_domain="cluster.local", now="t")
    progressing = next(c for c in result["conditions"] if c["type"] == names.COND_PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == ("True", status.REASON_DOWNLOADING_NEW_REVISION)
    assert "Job x" in progressing["message"]


# ------------------------------------------------------------------------- startup and deadlines
def startup_seconds(objects: list[Json]) -> int:
    server = next(c for c in deployment_of(objects)["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
    probe = server["startupProbe"]
    return int(probe["periodSeconds"] * probe["failureThreshold"])


def test_the_startup_budget_follows_the_model_size() -> None:
    small = startup_seconds(children(sample("gpt-oss-20b")))
    large = startup_seconds(children(sample("gpt-oss-120b-2xh100")))
    assert 900 < small < large  # warm-up plus reading 13 GiB, then 64 GiB, at a conservative rate
    assert small >= 13 * 1024 / 50 + 900


def test_the_startup_budget_can_be_set_in_the_spec() -> None:
    objects = children(with_revision("a" * 40, startupTimeoutSeconds=5400))
    assert startup_seconds(objects) == 5400


def test_the_progress_deadline_outlasts_the_download_and_the_startup() -> None:
    objects = children(with_revision("a" * 40, startupTimeoutSeconds=5400))
    job_deadline = one(objects, "Job")["spec"]["activeDeadlineSeconds"]
    assert deployment_of(objects)["spec"]["progressDeadlineSeconds"] > job_deadline + 5400

    spec = {"model": "gpt-oss-20b", "gpu": {"product": "NVIDIA-H100-80GB-HBM3"}}
    claimed = children(cr_from({**spec, "weights": {"existingClaim": {"claimName": "w"}}}))
    assert startup_seconds(claimed) < deployment_of(claimed)["spec"]["progressDeadlineSeconds"] < job_deadline
