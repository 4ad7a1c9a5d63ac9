"""What the autoscaler writes down: `status.autoscaling`, its conditions and its Events (pure).

Inputs in, data out: the previous status, the decision, the capacity cap and the time (Unix seconds,
turned into RFC 3339 here). The controller applies what these functions return (server-side apply as
`names.FIELD_MANAGER_AUTOSCALER`).

The autoscaler owns two conditions, in the standard shape (`lastTransitionTime` moves only when the status
flips): `CapacityLimited` (operator mode: the signals asked for more replicas than free GPUs hold) and
`ScalingActive` (whether the chosen mode can act: e.g. False/KedaNotInstalled). Every other condition
belongs to the reconcile's status module and is passed through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gptoss_operator import names
from gptoss_operator.status import ConditionValue, EventSpec

from .capacity import Cap, Fit
from .policy import Decision, DecisionHistory, Direction, Recommendation

Json = dict[str, Any]

MAX_DECISIONS: Final = 10
MAX_HISTORY: Final = 500  # below the CRD's maxItems (512)
OWNED_CONDITIONS: Final = names.AUTOSCALER_CONDITIONS
# Reasons of the autoscaler's conditions.
REASON_CAPPED: Final = "InsufficientFreeGPUs"
REASON_WITHIN_CAPACITY: Final = "WithinCapacity"
REASON_CAPACITY_UNKNOWN: Final = "CapacityUnknown"
REASON_KEDA_NOT_INSTALLED: Final = "KedaNotInstalled"
_NUMBERS = re.compile(r"[0-9]+(\.[0-9]+)?")
# Holds that mean the autoscaler cannot see the fleet (ScalingActive=False), by the decision's code.
_BLIND_HOLDS: Final = {"missing_metrics": "MissingMetrics", "no_ready_replicas": "NoReadyReplicas"}
# ScalingActive=False reasons worth a Warning Event; NoReadyReplicas is every deployment's normal start.
_WARNING_REASONS: Final = frozenset({"MissingMetrics", REASON_KEDA_NOT_INSTALLED, "InvalidAutoscaling"})


def rfc3339(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_seconds(rfc3339_time: str | None) -> float | None:
    """An RFC 3339 time (as the API server writes it) in Unix seconds; None when absent or unreadable."""
    if not rfc3339_time:
        return None
    try:
        return datetime.fromisoformat(rfc3339_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- history
def compact(history: DecisionHistory) -> DecisionHistory:
    """Runs of one recommended value reduced to their first and latest entries, at most MAX_HISTORY runs.

    Stabilization asks whether a value was recommended within a window; the latest entry of a run answers
    that as all of them would, and the first one says when the run began (what the status keeps).
    """
    kept: list[Recommendation] = []
    for entry in history.recommendations:
        if len(kept) >= 2 and kept[-1].replicas == entry.replicas == kept[-2].replicas:
            kept[-1] = entry
        else:
            kept.append(entry)
    return DecisionHistory(
        recommendations=tuple(kept[-2 * MAX_HISTORY :]),
        scale_events=history.scale_events[-MAX_HISTORY:],
        started=history.started,
    )


def _run_starts(recommendations: Sequence[Recommendation]) -> list[Recommendation]:
    return [r for i, r in enumerate(recommendations) if i == 0 or recommendations[i - 1].replicas != r.replicas]


def stored_form(history: DecisionHistory) -> Json:
    """The history as `status.autoscaling.history` keeps it: each run of one value by its start.

    Written only when the runs change (`operator_status`), so a steady recommendation rewrites nothing;
    `stored_history` reads the runs back.
    """
    stored = history.to_dict()
    stored["recommendations"] = [[r.time, r.replicas] for r in _run_starts(history.recommendations)[-MAX_HISTORY:]]
    return stored


def _same_runs(kept: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """The same runs of values, scale events and start: only the times within the runs moved."""

    def values(history: Mapping[str, Any]) -> list[Any]:
        return [entry[1] for entry in history.get("recommendations") or [] if isinstance(entry, list) and entry]

    return (
        values(kept) == values(stored)
        and kept.get("scaleEvents") == stored.get("scaleEvents")
        and kept.get("started") == stored.get("started")
    )


def stored_history(status: Mapping[str, Any] | None, now: float) -> DecisionHistory:
    """The history kept in `status.autoscaling.history` (empty when absent or unreadable).

    Runs are contiguous, so each one lasted until the next began; the last one is taken to last until
    `now`. After a restart that is the cautious reading: scale-down waits as if the run had gone on.
    """
    stored = ((status or {}).get("autoscaling") or {}).get("history")
    if not isinstance(stored, Mapping):
        return DecisionHistory()
    try:
        history = DecisionHistory.from_dict(stored)
    except ValueError:
        return DecisionHistory()
    runs = history.recommendations
    expanded: list[Recommendation] = []
    for index, run in enumerate(runs):
        end = runs[index + 1].time if index + 1 < len(runs) else max(now, run.time)
        expanded.append(run)
        if end > run.time:
            expanded.append(Recommendation(end, run.replicas))
    return DecisionHistory(recommendations=tuple(expanded), scale_events=history.scale_events, started=history.started)


# ----------------------------------------------------------------------------------------- conditions
def conditions_by_type(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    found = (status or {}).get("conditions") or []
    return {str(c.get("type")): c for c in found if isinstance(c, Mapping)}


def merge_conditions(
    status: Mapping[str, Any] | None,
    values: Mapping[str, ConditionValue | None],
    *,
    generation: int,
    now: str,
) -> list[Json]:
    """The conditions list with the autoscaler's conditions set (None: removed), others untouched.

    The controller applies only the autoscaler's entries of it (`status.conditions` is a list map keyed by
    type, so the reconcile's entries, owned by another field manager, are neither restated nor removed).
    """
    previous = conditions_by_type(status)
    result = [dict(c) for t, c in previous.items() if t not in values]
    for type_, value in values.items():
        if value is None:
            continue
        before = previous.get(type_)
        unchanged = before is not None and before.get("status") == value.status
        result.append(
            {
                "type": type_,
                "status": value.status,
                "reason": value.reason,
                "message": value.message,
                "observedGeneration": generation,
                "lastTransitionTime": str(before.get("lastTransitionTime", now)) if unchanged and before else now,
            }
        )
    return result


def capacity_value(decision: Decision, fit: Fit | None, capped: Cap) -> ConditionValue | None:
    """CapacityLimited for this decision; None keeps the previous value (a hold on missing data says nothing)."""
    if decision.direction == Direction.HOLD:
        return None
    if capped.limited:
        return ConditionValue("True", REASON_CAPPED, capped.message)
    if fit is None:
        return ConditionValue(
            "Unknown",
            REASON_CAPACITY_UNKNOWN,
            "nodes or pods cannot be listed cluster-wide (RBAC?); scale-ups are not capped by free GPUs",
        )
    return ConditionValue(
        "False",
        REASON_WITHIN_CAPACITY,
        f"{decision.desired} replica(s) wanted, {fit.total} fit: {fit.placed} placed + {fit.additional} more "
        f"on free GPUs of {len(fit.nodes)} matching node{'s' if len(fit.nodes) != 1 else ''}",
    )


def operator_scaling_value(decision: Decision, interval_seconds: float) -> ConditionValue:
    """ScalingActive in mode operator: False while the autoscaler cannot see the fleet's signals."""
    blind = _BLIND_HOLDS.get(decision.code)
    if blind is not None:
        return ConditionValue("False", blind, decision.reason)
    return ConditionValue(
        "True",
        "OperatorAutoscaler",
        f"the operator's autoscaler reads the pods' signals every {interval_seconds:g} s",
    )


def mode_scaling_value(
    mode: str, *, keda_installed: bool, child_name: str, unserved: str | None = None
) -> ConditionValue:
    """ScalingActive in modes hpa and keda, where a standard autoscaler acts; `unserved` says what of the spec
    this API server does not serve (capabilities.tolerance_not_applied)."""
    also = f"; {unserved}" if unserved else ""
    if mode == "hpa":
        return ConditionValue(
            "True",
            "HorizontalPodAutoscaler",
            f"the HorizontalPodAutoscaler {child_name} scales this deployment on Pods metrics served by "
            f"Prometheus Adapter (the chart's adapter rules); GPU capacity is not checked in this mode{also}",
        )
    if keda_installed:
        return ConditionValue(
            "True",
            "ScaledObject",
            f"the KEDA ScaledObject {child_name} scales this deployment on Prometheus queries{also}",
        )
    return ConditionValue(
        "False",
        REASON_KEDA_NOT_INSTALLED,
        "autoscaling.mode is keda, but this cluster does not serve keda.sh/v1alpha1 ScaledObject: install KEDA "
        "(its CRDs and operator) or set autoscaling.mode to operator or hpa; no ScaledObject was created",
    )


def invalid_config_value(message: str) -> ConditionValue:
    return ConditionValue("False", "InvalidAutoscaling", message)


# ----------------------------------------------------------------------------------------- decisions
def _shape(reason: str) -> str:
    return _NUMBERS.sub("#", reason)


def capped_reason(decision: Decision, applied: int, capped: Cap) -> str:
    """The decision's reason, led by what really happened when the capacity cap lowered it."""
    if not capped.limited:
        return decision.reason
    move = f"scale up {decision.current} -> {applied}" if applied > decision.current else f"stay at {decision.current}"
    return f"{move}: capped by free GPUs ({capped.message}); the signals asked for {decision.reason}"


def decision_entry(decision: Decision, applied: int, capped: Cap, now: float) -> Json:
    """One `status.autoscaling.decisions` entry; `toReplicas` is what was set after the capacity cap."""
    entry = decision.status_entry(rfc3339(now))
    entry["toReplicas"] = applied
    entry["reason"] = capped_reason(decision, applied, capped)
    return entry


def append_decision(previous: Sequence[Mapping[str, Any]], entry: Json) -> list[Json]:
    """The decisions with `entry` appended when it changes replicas or says something new; newest last.

    Decisions that change nothing are kept only when their reason (numbers aside) differs from the last
    one's, so a steady fleet does not push the interesting decisions out of the bounded list.
    """
    kept = [dict(d) for d in previous if isinstance(d, Mapping)]
    last = kept[-1] if kept else None
    changes = entry["toReplicas"] != entry["fromReplicas"]
    if not changes and last is not None and _shape(str(last.get("reason", ""))) == _shape(entry["reason"]):
        return kept[-MAX_DECISIONS:]
    return [*kept, entry][-MAX_DECISIONS:]


def operator_status(
    previous: Mapping[str, Any] | None,
    *,
    decision: Decision,
    applied: int,
    capped: Cap,
    fit: Fit | None,
    history: DecisionHistory,
    now: float,
) -> Json:
    """`status.autoscaling` after one decision of mode operator."""
    before = dict((previous or {}).get("autoscaling") or {})
    entry = decision_entry(decision, applied, capped, now)
    recommendation = decision.recommendation if decision.recommendation is not None else before.get("recommendation")
    return {
        "mode": "operator",
        "recommendation": recommendation,
        "schedulableReplicas": fit.total if fit is not None else None,
        "lastScaleTime": rfc3339(now) if applied != decision.current else before.get("lastScaleTime"),
        "decisions": append_decision(before.get("decisions") or [], entry),
        "history": _unchanged_or(before.get("history"), stored_form(history)),
    }


def _unchanged_or(kept: Any, stored: Json) -> Any:
    """Keep the stored history while its runs are the same, so a steady load writes no status."""
    return kept if isinstance(kept, Mapping) and _same_runs(kept, stored) else stored


def mode_status(previous: Mapping[str, Any] | None, mode: str) -> Json:
    """`status.autoscaling` in modes hpa and keda: the mode; the operator's own fields are cleared."""
    before = dict((previous or {}).get("autoscaling") or {})
    return {
        "mode": mode,
        "recommendation": None,
        "schedulableReplicas": None,
        "lastScaleTime": before.get("lastScaleTime"),
        "decisions": before.get("decisions") or [],
        "history": None,
    }


# -------------------------------------------------------------------------------------------- events
def condition_events(previous: Mapping[str, Any] | None, conditions: Sequence[Mapping[str, Any]]) -> list[EventSpec]:
    """Warnings when CapacityLimited turns True (or its numbers change) or ScalingActive turns False for a
    reason that needs attention (missing metrics, KEDA missing, an unusable autoscaling spec)."""
    before = conditions_by_type(previous)
    events: list[EventSpec] = []
    for cond in conditions:
        type_ = cond.get("type")
        if type_ not in OWNED_CONDITIONS:
            continue
        old = before.get(str(type_)) or {}
        message = str(cond.get("message", ""))
        if type_ == names.COND_CAPACITY_LIMITED and cond.get("status") == "True" and old.get("message") != message:
            events.append(EventSpec("Warning", "CapacityLimited", message))
        flipped = (old.get("status"), old.get("reason")) != ("False", cond.get("reason"))
        warns = cond.get("reason") in _WARNING_REASONS
        if type_ == names.COND_SCALING_ACTIVE and cond.get("status") == "False" and flipped and warns:
            events.append(EventSpec("Warning", str(cond.get("reason")), message))
    return events


def rescale_event(decision: Decision, applied: int, capped: Cap) -> EventSpec | None:
    """A Normal event for a replica change (like the HPA's SuccessfulRescale)."""
    if applied == decision.current:
        return None
    return EventSpec("Normal", "Rescaled", capped_reason(decision, applied, capped))
