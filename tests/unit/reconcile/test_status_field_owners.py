"""Status ownership (pure): what each writer applies, and moving the old merge-patch managers' fields."""

from __future__ import annotations

from typing import Any

from gptoss_operator import names
from gptoss_operator.reconcile import RECONCILE_CONDITIONS
from gptoss_operator.status import OWNED_KEYS
from gptoss_operator.status_ownership import (
    autoscaler_fields,
    condition_key,
    live_fields,
    reconcile_fields,
    same_fields,
    upgraded_managed_fields,
)

Json = dict[str, Any]
TIME = "2026-11-25T10:00:00Z"
READY = {"type": "Ready", "status": "True", "reason": "ReplicasReady", "lastTransitionTime": TIME}
LIMITED = {"type": names.COND_CAPACITY_LIMITED, "status": "False", "reason": "WithinCapacity"}
STALE = {"type": "Warming", "status": "True", "reason": "OldVersion"}  # a type no writer states any more


def entry(manager: str, operation: str, fields: Json, subresource: str | None = "status") -> Json:
    found: Json = {"manager": manager, "operation": operation, "apiVersion": names.API_VERSION, "time": TIME}
    found |= {"fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        found["subresource"] = subresource
    return found


def of(entries: list[Json], manager: str, operation: str) -> Json:
    matches = [e for e in entries if e["manager"] == manager and e["operation"] == operation]
    assert len(matches) == 1, entries
    return matches[0]


LEGACY_STATUS = entry(
    names.FIELD_MANAGER,
    "Update",
    {
        "f:status": {
            ".": {},
            "f:phase": {},
            "f:plan": {"f:gpus": {}},
            "f:conditions": {},
            "f:autoscaling": {"f:mode": {}},
        }
    },
)
KOPF_ANNOTATIONS = entry("kopf", "Update", {"f:metadata": {"f:annotations": {"f:kopf.gptoss.io/last": {}}}}, None)


def test_the_old_status_entry_is_split_between_the_two_apply_managers() -> None:
    autoscaler_apply = entry(
        names.FIELD_MANAGER_AUTOSCALER, "Apply", {"f:status": {"f:autoscaling": {"f:history": {}}}}
    )
    upgraded = upgraded_managed_fields([KOPF_ANNOTATIONS, LEGACY_STATUS, autoscaler_apply], [READY, LIMITED, STALE])
    assert upgraded is not None
    assert not [e for e in upgraded if e["operation"] == "Update" and "f:status" in e["fieldsV1"]]
    assert of(upgraded, "kopf", "Update") == KOPF_ANNOTATIONS  # not a status field: left with Kopf
    reconcile = of(upgraded, names.FIELD_MANAGER, "Apply")
    assert reconcile["subresource"] == "status" and reconcile["apiVersion"] == names.API_VERSION
    status = reconcile["fieldsV1"]["f:status"]
    assert set(status) == {".", "f:phase", "f:plan", "f:conditions"}
    # The atomic list becomes one entry per live condition; the stale type goes to the reconcile, whose next
    # apply (which does not state it) removes it.
    assert set(status["f:conditions"]) == {condition_key("Ready"), condition_key("Warming")}
    ready = status["f:conditions"][condition_key("Ready")]
    assert ready == {".": {}, "f:type": {}, "f:status": {}, "f:reason": {}, "f:lastTransitionTime": {}}
    autoscaler = of(upgraded, names.FIELD_MANAGER_AUTOSCALER, "Apply")["fieldsV1"]["f:status"]
    assert autoscaler["f:autoscaling"] == {"f:mode": {}, "f:history": {}}  # united with what it applied already
    assert set(autoscaler["f:conditions"]) == {condition_key(names.COND_CAPACITY_LIMITED)}


def test_kopf_status_fields_move_and_its_annotations_stay() -> None:
    kopf = entry("kopf", "Update", {"f:metadata": {"f:annotations": {}}, "f:status": {"f:kopf": {}}}, None)
    upgraded = upgraded_managed_fields([kopf], [])
    assert upgraded is not None
    assert of(upgraded, "kopf", "Update")["fieldsV1"] == {"f:metadata": {"f:annotations": {}}}
    assert of(upgraded, names.FIELD_MANAGER, "Apply")["fieldsV1"] == {"f:status": {"f:kopf": {}}}


def test_per_condition_entries_of_a_list_map_are_kept_as_they_are() -> None:
    keyed = {condition_key("Ready"): {".": {}, "f:status": {}}, condition_key("ScalingActive"): {".": {}}}
    upgraded = upgraded_managed_fields(
        [entry(names.FIELD_MANAGER, "Update", {"f:status": {"f:conditions": keyed}})], []
    )
    assert upgraded is not None
    reconcile = of(upgraded, names.FIELD_MANAGER, "Apply")["fieldsV1"]["f:status"]["f:conditions"]
    autoscaler = of(upgraded, names.FIELD_MANAGER_AUTOSCALER, "Apply")["fieldsV1"]["f:status"]["f:conditions"]
    assert set(reconcile) == {condition_key("Ready")} and set(autoscaler) == {condition_key("ScalingActive")}


def test_nothing_to_move_without_an_old_status_entry_of_ours() -> None:
    applied = entry(names.FIELD_MANAGER, "Apply", {"f:status": {"f:phase": {}}})
    someone_else = entry("kubectl-edit", "Update", {"f:status": {"f:phase": {}}})
    assert upgraded_managed_fields([applied, someone_else, KOPF_ANNOTATIONS], [READY]) is None


def test_the_reconcile_states_its_keys_and_conditions_only() -> None:
    previous = {"plan": {"gpus": 1}, "phase": "Ready", "autoscaling": {"mode": "hpa"}, "conditions": [READY, LIMITED]}
    invalid = {"phase": "Failed", "observedGeneration": 2, "engine": None, "conditions": [READY, LIMITED, STALE]}
    fields = reconcile_fields(previous, invalid, owned_keys=OWNED_KEYS, owned_conditions=RECONCILE_CONDITIONS)
    assert fields == {"phase": "Failed", "observedGeneration": 2, "plan": {"gpus": 1}, "conditions": [READY]}


def test_the_autoscaler_states_its_fields_only_and_leaves_out_an_empty_autoscaling() -> None:
    conditions = [READY, LIMITED]
    assert autoscaler_fields({"mode": "hpa", "history": None}, conditions, names.AUTOSCALER_CONDITIONS) == {
        "autoscaling": {"mode": "hpa"},
        "conditions": [LIMITED],
    }
    assert autoscaler_fields({}, conditions, names.AUTOSCALER_CONDITIONS) == {"conditions": [LIMITED]}


def test_same_fields_ignores_condition_order_and_sees_a_stale_key() -> None:
    live = {"phase": "Ready", "engine": {"name": "trtllm"}, "conditions": [LIMITED, READY], "autoscaling": {"x": 1}}
    kwargs: Any = {"keys": OWNED_KEYS, "owned_conditions": RECONCILE_CONDITIONS}
    assert same_fields(
        {"phase": "Ready", "engine": {"name": "trtllm"}, "conditions": [READY]}, live_fields(live, **kwargs)
    )
    # The reconcile no longer computes an engine: the apply must go out so that the server removes it.
    assert not same_fields({"phase": "Ready", "conditions": [READY]}, live_fields(live, **kwargs))
