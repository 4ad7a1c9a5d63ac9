"""Who owns which status field, and moving fields written by the old merge patches to their owners (pure).

Status is written by server-side apply, one field manager per writer: the reconcile (`names.FIELD_MANAGER`)
applies its top-level keys and its conditions, the autoscaler (`names.FIELD_MANAGER_AUTOSCALER`)
`status.autoscaling` and its conditions (`names.AUTOSCALER_CONDITIONS`). `status.conditions` is a list map
keyed by `type` in the CRD, so each manager owns only its own condition entries and neither removes the
other's. An apply states everything its manager wants: a field it applied before and leaves out now is
removed by the server (unless another manager owns it too).

Before this, both writers merge-patched status (operation Update) under the manager their client's user agent
named, and Kopf under its own. Fields owned by an Update manager are never removed by anyone's apply, so a
field neither writer computes any more would stay forever. `upgraded_managed_fields` does for the CR what
client-go's `csaupgrade.UpgradeManagedFields` does for kubectl: it moves the status part of those Update
entries into the Apply entries of the manager that now writes each field (creating them where missing); the
caller sends the result as a JSON patch of `metadata.managedFields`. The old list was atomic (owned whole as
`f:conditions`); it is split into one entry per live condition, given to the manager of its type.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from gptoss_operator import names

Json = dict[str, Any]

APPLY: Final = "Apply"
UPDATE: Final = "Update"
STATUS_SUBRESOURCE: Final = "status"
FIELDS_TYPE: Final = "FieldsV1"


def condition_key(type_: str) -> str:
    """The key of a list-map entry in a FieldsV1 set: `k:{"type":"Ready"}`."""
    return "k:" + json.dumps({"type": type_}, separators=(",", ":"))


def _type_of_key(key: str) -> str | None:
    if not key.startswith("k:"):
        return None
    try:
        value = json.loads(key[2:])
    except ValueError:
        return None
    return str(value.get("type")) if isinstance(value, dict) and "type" in value else None


def union(left: Mapping[str, Any], right: Mapping[str, Any]) -> Json:
    """The union of two FieldsV1 sets (nested objects whose keys are the owned paths)."""
    merged: Json = copy.deepcopy(dict(left))
    for key, value in right.items():
        if key in merged and isinstance(merged[key], Mapping) and isinstance(value, Mapping):
            merged[key] = union(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _condition_entries(
    owned: Mapping[str, Any], live_conditions: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[str, Json]]:
    """The owned conditions as (type, field set) by entry key; an atomic `f:conditions` becomes every live one."""
    entries = {key: (t, dict(v)) for key, v in owned.items() if (t := _type_of_key(key)) is not None}
    if entries or any(k != "." for k in owned):
        return entries
    for condition in live_conditions:
        type_ = str(condition.get("type"))
        fields: Json = {".": {}, **{f"f:{k}": {} for k in condition}}
        entries[condition_key(type_)] = (type_, fields)
    return entries


def split_status(
    status_fields: Mapping[str, Any],
    live_conditions: Sequence[Mapping[str, Any]],
    autoscaler_conditions: Collection[str] = names.AUTOSCALER_CONDITIONS,
) -> dict[str, Json]:
    """A legacy `f:status` set divided by manager: {manager: its part of the set} (empty parts left out)."""
    reconcile: Json = {}
    autoscaler: Json = {}
    for key, value in status_fields.items():
        if key == "f:autoscaling":
            autoscaler[key] = copy.deepcopy(value)
        elif key == "f:conditions" and isinstance(value, Mapping):
            for entry_key, (type_, fields) in _condition_entries(value, live_conditions).items():
                owner = autoscaler if type_ in autoscaler_conditions else reconcile
                owner.setdefault("f:conditions", {})[entry_key] = fields
        else:
            reconcile[key] = copy.deepcopy(value)
    parts = {names.FIELD_MANAGER: reconcile, names.FIELD_MANAGER_AUTOSCALER: autoscaler}
    return {manager: {"f:status": part} for manager, part in parts.items() if part}


def is_legacy_status_entry(entry: Mapping[str, Any], legacy_managers: Collection[str]) -> bool:
    """An Update entry of one of our old managers that owns status fields."""
    fields = entry.get("fieldsV1")
    return (
        entry.get("manager") in legacy_managers
        and entry.get("operation") == UPDATE
        and isinstance(fields, Mapping)
        and "f:status" in fields
    )


def upgraded_managed_fields(
    managed_fields: Sequence[Mapping[str, Any]],
    live_conditions: Sequence[Mapping[str, Any]],
    *,
    legacy_managers: Collection[str] = names.LEGACY_STATUS_MANAGERS,
) -> list[Json] | None:
    """`managedFields` with the legacy managers' status fields moved to the Apply managers; None: nothing to do.

    The rest of a legacy entry (Kopf's annotations, say) stays where it is; an entry left empty is dropped.
    """
    if not any(is_legacy_status_entry(e, legacy_managers) for e in managed_fields):
        return None
    kept: list[Json] = []
    moved: dict[str, Json] = {}
    template: Json = {}
    for entry in managed_fields:
        if not is_legacy_status_entry(entry, legacy_managers):
            kept.append(copy.deepcopy(dict(entry)))
            continue
        remaining = dict(entry["fieldsV1"])
        status_fields = remaining.pop("f:status")
        template = template or {k: entry[k] for k in ("apiVersion", "time") if k in entry}
        for manager, part in split_status(
            status_fields if isinstance(status_fields, Mapping) else {}, live_conditions
        ).items():
            moved[manager] = union(moved.get(manager, {}), part)
        if remaining:
            kept.append({**copy.deepcopy(dict(entry)), "fieldsV1": remaining})
    for manager, fields in moved.items():
        _merge_into_apply_entry(kept, manager, fields, template)
    return kept


def _merge_into_apply_entry(entries: list[Json], manager: str, fields: Json, template: Mapping[str, Any]) -> None:
    for entry in entries:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == APPLY
            and entry.get("subresource") == STATUS_SUBRESOURCE
        ):
            entry["fieldsV1"] = union(entry.get("fieldsV1") or {}, fields)
            return
    entries.append(
        {
            "manager": manager,
            "operation": APPLY,
            **template,
            "fieldsType": FIELDS_TYPE,
            "fieldsV1": fields,
            "subresource": STATUS_SUBRESOURCE,
        }
    )


# ----------------------------------------------------------------------------------- what a writer applies
def strip_none(value: Any) -> Any:
    """`value` without None entries: an apply leaves out what its manager no longer sets."""
    if isinstance(value, Mapping):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def conditions_of_types(conditions: Any, types: Collection[str]) -> list[Json]:
    """The conditions (objects only) whose type is one of `types`, in their order."""
    found = conditions if isinstance(conditions, list) else []
    return [dict(c) for c in found if isinstance(c, Mapping) and c.get("type") in types]


def reconcile_fields(
    previous: Mapping[str, Any], new: Mapping[str, Any], *, owned_keys: Sequence[str], owned_conditions: Collection[str]
) -> Json:
    """What the reconcile applies: its keys and its conditions, None values left out.

    A key the reconcile did not compute this time (an invalid spec computes no plan) keeps its live value, as
    a merge patch that left it out did; a key computed as None is left out, so the apply removes it.
    """
    fields: Json = {}
    for key in owned_keys:
        if key == "conditions":
            continue
        if key in new:
            fields[key] = new[key]
        elif key in previous:
            fields[key] = previous[key]
    fields["conditions"] = conditions_of_types(new.get("conditions"), owned_conditions)
    return dict(strip_none(fields))


def autoscaler_fields(
    autoscaling: Mapping[str, Any] | None, conditions: Any, owned_conditions: Collection[str]
) -> Json:
    """What the autoscaler applies: status.autoscaling (left out when empty: removed) and its conditions."""
    fields: Json = {"conditions": conditions_of_types(conditions, owned_conditions)}
    if autoscaling:
        fields["autoscaling"] = autoscaling
    return dict(strip_none(fields))


def live_fields(live: Mapping[str, Any], *, keys: Collection[str], owned_conditions: Collection[str]) -> Json:
    """The part of the live status that an apply of `keys` and `owned_conditions` states, None values left out."""
    fields: Json = {k: v for k, v in live.items() if k in keys and k != "conditions"}
    fields["conditions"] = conditions_of_types(live.get("conditions"), owned_conditions)
    return dict(strip_none(fields))


def same_fields(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether applying `desired` would change nothing in `live` (conditions compared by type, not order)."""

    def by_type(fields: Mapping[str, Any]) -> Json:
        conditions = {str(c.get("type")): c for c in fields.get("conditions") or []}
        return {**fields, "conditions": conditions}

    return by_type(desired) == by_type(live)
