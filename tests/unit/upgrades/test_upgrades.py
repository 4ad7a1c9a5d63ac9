"""Operator upgrades that restart nothing (gptoss_operator.upgrades): pure decisions, no cluster.

A "live" Deployment here is what the API server would hold after the operator applied a rendered one and
its rollout finished; a "new operator version" is the same CR rendered with other settings.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gptoss_operator import names, upgrades
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import ClusterFeatures
from gptoss_operator.parsing import parse_deployment
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings
from gptoss_operator.status import Capacity

OLD = OperatorSettings(default_image="registry.example/runtime:1.0")
NEW = OperatorSettings(default_image="registry.example/runtime:2.0")
FEATURES = ClusterFeatures()
Json = dict[str, Any]


def cr_of(spec: Json | None = None, annotations: dict[str, str] | None = None) -> GptOssDeployment:
    return parse_deployment(
        {
            "apiVersion": "gptoss.io/v1alpha1",
            "kind": "GptOssDeployment",
            "metadata": {"name": "chat", "namespace": "team", "uid": "u1", "annotations": annotations or {}},
            "spec": {"model": "gpt-oss-20b", **(spec or {})},
        }
    )


def never_admit(_key: tuple[str, str]) -> tuple[bool, upgrades.SlotView]:
    return False, upgrades.SlotView(frozenset({("team", "a"), ("team", "b")}), 2)


def always_admit(_key: tuple[str, str]) -> tuple[bool, upgrades.SlotView]:
    return True, upgrades.SlotView(frozenset(), 2)


def render(
    cr: GptOssDeployment,
    settings: OperatorSettings,
    status: Json | None = None,
    live: Json | None = None,
    admit: upgrades.Admit = never_admit,
) -> upgrades.Rendered:
    return upgrades.render(
        cr, plan(cr.spec, settings), settings, FEATURES, status or {}, live, operator_version="9.9.9", admit=admit
    )


def deployed(rendered: upgrades.Rendered) -> tuple[Json, Json]:
    """(the live Deployment after a finished rollout, the status the reconcile recorded)."""
    live = copy.deepcopy(upgrades.server_deployment(rendered.children))
    assert live is not None
    live["metadata"]["generation"] = 1
    replicas = live["spec"]["replicas"]
    live["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }
    return live, {"runtime": rendered.runtime.to_status()}


def template(rendered: upgrades.Rendered) -> Json:
    deployment = upgrades.server_deployment(rendered.children)
    assert deployment is not None
    return dict(deployment["spec"]["template"])


def images(rendered: upgrades.Rendered) -> set[str]:
    return {c["image"] for c in template(rendered)["spec"]["containers"]}


# --------------------------------------------------------------------------------------------- records
def test_a_new_cr_records_the_default_image_and_template_revision() -> None:
    rendered = render(cr_of(), OLD)
    assert rendered.runtime.image == "registry.example/runtime:1.0"
    assert rendered.runtime.template_revision == 1
    assert rendered.runtime.operator_version == "9.9.9"
    assert rendered.condition.status == "False"
    assert images(rendered) == {"registry.example/runtime:1.0"}
    deployment = upgrades.server_deployment(rendered.children) or {}
    annotations = deployment["metadata"]["annotations"]
    assert upgrades.decode_template(annotations[names.ANNOTATION_RENDERED_TEMPLATE]) == template(rendered)


def test_a_new_operator_version_keeps_the_pod_template_and_says_an_update_waits() -> None:
    first = render(cr_of(), OLD)
    live, status = deployed(first)
    after_upgrade = render(cr_of(), NEW, status, live)
    assert template(after_upgrade) == template(first)
    assert after_upgrade.runtime.image == "registry.example/runtime:1.0"
    assert (after_upgrade.condition.status, after_upgrade.condition.reason) == ("True", upgrades.REASON_AWAITING_OPT_IN)
    message = after_upgrade.condition.message
    assert "registry.example/runtime:1.0 -> registry.example/runtime:2.0" in message
    assert names.ANNOTATION_APPLY_UPDATE in message and "Automatic" in message
    assert not after_upgrade.applied_update


def test_a_new_setting_that_changes_the_template_changes_no_pod() -> None:
    first = render(cr_of(), OLD)
    live, status = deployed(first)
    moved = OLD.model_copy(update={"server_node_selector": {"pool": "gpu-b"}})
    after = render(cr_of(), moved, status, live)
    assert template(after) == template(first)
    assert after.condition.status == "True"
    assert "operator settings" in after.condition.message


def test_the_opt_in_annotation_applies_the_waiting_update_once() -> None:
    live, status = deployed(render(cr_of(), OLD))
    opted = render(cr_of(annotations={names.ANNOTATION_APPLY_UPDATE: "now"}), NEW, status, live)
    assert images(opted) == {"registry.example/runtime:2.0"}
    assert opted.applied_update and opted.condition.status == "False"
    assert opted.runtime.applied_update == "now" and opted.runtime.image == "registry.example/runtime:2.0"
    # The same annotation value does not apply the next operator version's update.
    live, status = deployed(opted)
    newer = NEW.model_copy(update={"default_image": "registry.example/runtime:3.0"})
    later = render(cr_of(annotations={names.ANNOTATION_APPLY_UPDATE: "now"}), newer, status, live)
    assert images(later) == {"registry.example/runtime:2.0"}
    assert later.condition.status == "True"


def test_an_edit_of_the_spec_rolls_with_the_recorded_image() -> None:
    live, status = deployed(render(cr_of(), OLD))
    edited = render(cr_of({"podAnnotations": {"team": "search"}}), NEW, status, live)
    assert template(edited)["metadata"]["annotations"]["team"] == "search"
    assert images(edited) == {"registry.example/runtime:1.0"}
    assert edited.condition.status == "True"  # the new image still waits


def test_scaling_is_not_an_edit_of_the_template() -> None:
    first = render(cr_of(), OLD)
    live, status = deployed(first)
    moved = OLD.model_copy(update={"server_node_selector": {"pool": "gpu-b"}})
    scaled = render(cr_of({"replicas": 3}), moved, status, live)
    assert template(scaled) == template(first)


def test_a_hand_edit_of_the_template_is_reverted_to_the_recorded_one() -> None:
    first = render(cr_of(), OLD)
    live, status = deployed(first)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    assert template(render(cr_of(), NEW, status, live)) == template(first)


def test_a_deployment_from_before_records_keeps_its_live_template() -> None:
    first = render(cr_of(), OLD)
    live, _ = deployed(first)
    for key in (names.ANNOTATION_RENDERED_TEMPLATE, names.ANNOTATION_SPEC_HASH):
        del live["metadata"]["annotations"][key]
    adopted = render(cr_of(), NEW, {}, live)
    assert template(adopted) == template(first)
    assert adopted.runtime.image == "registry.example/runtime:1.0"  # read back from the live pods
    assert adopted.condition.status == "True"


def test_automatic_updates_roll_when_a_slot_is_free_and_wait_otherwise() -> None:
    automatic = cr_of({"updatePolicy": {"operatorUpdates": "Automatic"}})
    live, status = deployed(render(automatic, OLD))
    waiting = render(automatic, NEW, status, live, admit=never_admit)
    assert images(waiting) == {"registry.example/runtime:1.0"}
    assert (waiting.condition.status, waiting.condition.reason) == ("True", upgrades.REASON_AWAITING_ROLLOUT_SLOT)
    assert "2 of at most 2" in waiting.condition.message and "team/a" in waiting.condition.message
    rolled = render(automatic, NEW, status, live, admit=always_admit)
    assert images(rolled) == {"registry.example/runtime:2.0"} and rolled.applied_update


def test_nothing_waits_when_the_new_version_renders_the_same_template() -> None:
    live, status = deployed(render(cr_of({"image": "mine/runtime:7"}), OLD))
    same = render(cr_of({"image": "mine/runtime:7"}), NEW, status, live)
    assert (same.condition.status, same.condition.reason) == ("False", upgrades.REASON_UP_TO_DATE)
    assert same.runtime.image == "registry.example/runtime:2.0"  # what a later removal of spec.image gets


def test_the_spec_hash_ignores_defaults_replicas_and_the_update_policy() -> None:
    base = upgrades.spec_hash(cr_of())
    assert upgrades.spec_hash(cr_of({"replicas": 1, "imagePullPolicy": "IfNotPresent"})) == base
    assert upgrades.spec_hash(cr_of({"replicas": 5, "updatePolicy": {"operatorUpdates": "Automatic"}})) == base
    assert upgrades.spec_hash(cr_of({"imagePullPolicy": "Always"})) != base


def test_a_status_runtime_of_the_wrong_shape_reads_as_none() -> None:
    assert upgrades.Recorded.from_status({"runtime": "x"}) == upgrades.Recorded()
    odd = upgrades.Recorded.from_status({"runtime": {"image": 3, "templateRevision": "1", "future": True}})
    assert odd == upgrades.Recorded()


# ---------------------------------------------------------------------------------------- throttle
@pytest.mark.parametrize(
    ("rolling", "limit", "admitted"),
    [
        (set(), 3, True),
        ({("n", "a"), ("n", "b")}, 3, True),
        ({("n", "a"), ("n", "b"), ("n", "c")}, 3, False),
        ({("n", "me"), ("n", "b"), ("n", "c")}, 3, True),  # it holds a slot already
        ({("n", "a")}, 1, False),
    ],
)
def test_admit_rollout(rolling: set[tuple[str, str]], limit: int, admitted: bool) -> None:
    assert upgrades.admit_rollout(("n", "me"), upgrades.SlotView(frozenset(rolling), limit)) is admitted


def test_slots_admitted_count_until_released() -> None:
    slots = upgrades.RolloutSlots()
    assert slots.try_admit(("n", "a"), frozenset(), 1)[0]
    admitted, view = slots.try_admit(("n", "b"), frozenset(), 1)  # the cache has not seen a's rollout yet
    assert not admitted and view.rolling == {("n", "a")}
    slots.release(("n", "a"))
    assert slots.try_admit(("n", "b"), frozenset(), 1)[0]


def server(name: str, generation: int, observed: int, updated: int, replicas: int = 2) -> Json:
    return {
        "metadata": {
            "name": name,
            "namespace": "n",
            "generation": generation,
            "labels": {names.LABEL_COMPONENT: names.COMPONENT_SERVER, names.LABEL_DEPLOYMENT: name},
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "availableReplicas": replicas,
        },
    }


def test_rolling_owners_are_the_server_deployments_mid_rollout() -> None:
    done = server("done", 2, 2, 2)
    unobserved = server("unobserved", 3, 2, 2)
    replacing = server("replacing", 2, 2, 1)
    assert upgrades.rolling_owners([done, unobserved, replacing]) == {("n", "unobserved"), ("n", "replacing")}


def test_a_stalled_rollout_or_a_scale_up_waiting_for_gpus_holds_no_slot() -> None:
    stalled = server("stalled", 2, 2, 1)
    stalled["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    waiting_for_gpus = server("scaled", 2, 2, 3, replicas=3)
    waiting_for_gpus["status"]["availableReplicas"] = 1
    waiting_for_gpus["status"]["conditions"] = [
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    ]
    starting = server("starting", 2, 2, 2)
    starting["status"]["availableReplicas"] = 1  # the last new pod is not ready yet
    starting["status"]["conditions"] = [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]
    assert upgrades.rolling_owners([stalled, waiting_for_gpus, starting]) == {("n", "starting")}


# -------------------------------------------------------------------------------------------- surge
def capacity(additional: int, placed: int) -> Capacity:
    return Capacity("NVIDIA-H100-80GB-HBM3", 1, 2, additional, additional, placed)


def surge(strategy: Json) -> tuple[int, int]:
    rolling = strategy["rollingUpdate"]
    return rolling["maxSurge"], rolling["maxUnavailable"]


@pytest.mark.parametrize(
    ("additional", "placed", "replicas", "expected"),
    [
        (1, 2, 2, (1, 0)),  # a spare replica fits: no replica goes dark
        (0, 2, 2, (0, 1)),  # none fits: replace in place
        (1, 1, 2, (0, 1)),  # the free GPUs go to the replica still waiting to be placed
        (2, 1, 2, (1, 0)),
    ],
)
def test_max_surge_is_one_only_when_a_spare_replica_fits(
    additional: int, placed: int, replicas: int, expected: tuple[int, int]
) -> None:
    assert surge(upgrades.strategy_for(None, capacity(additional, placed), replicas, template_changes=True)) == expected


def test_unknown_capacity_does_not_surge() -> None:
    assert surge(upgrades.strategy_for(None, None, 1, template_changes=True)) == (0, 1)


def test_a_rollout_in_progress_keeps_its_strategy() -> None:
    live = server("x", 3, 3, 1)
    live["spec"]["strategy"] = upgrades.rolling_update_strategy(spare_replica_fits=True)
    assert surge(upgrades.strategy_for(live, capacity(0, 2), 2, template_changes=True)) == (1, 0)
    finished = server("x", 3, 3, 2)
    finished["spec"]["strategy"] = live["spec"]["strategy"]
    assert surge(upgrades.strategy_for(finished, capacity(0, 2), 2, template_changes=True)) == (0, 1)


def test_the_strategy_follows_free_gpus_only_when_a_rollout_starts() -> None:
    live = server("x", 3, 3, 2)
    live["spec"]["strategy"] = upgrades.rolling_update_strategy(spare_replica_fits=True)
    assert surge(upgrades.strategy_for(live, capacity(0, 2), 2, template_changes=False)) == (1, 0)  # no write
    assert surge(upgrades.strategy_for(live, capacity(0, 2), 2, template_changes=True)) == (0, 1)
