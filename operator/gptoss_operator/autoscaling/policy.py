"""The autoscaling decision: signals in, desired replicas and a reason out (pure; time is an input).

Target tracking, like the HorizontalPodAutoscaler, on LLM signals:

1. Hold (no decision) when a ready replica lacks a metric that has a target, or no replica is ready.
2. Per signal, `recommendation = ceil(ready * observed / target)`, where `observed` is the average over the
   ready replicas (TTFT: the quantile of all ready replicas' recent observations merged). Because the
   product is the fleet's total load over the per-replica target, replicas that are still starting count
   as capacity already on its way: a fleet of 4 ready + 2 starting under load for 6 does not scale again.
   A signal within its tolerance band of the target recommends the current replica count.
3. The busiest signal wins (maximum over signals).
4. Stabilization (as in the HPA): scale up to the *lowest* recommendation seen within the scale-up window,
   scale down to the *highest* seen within the scale-down window, so brief spikes and dips do not flap.
5. Scale-down is deferred while any replica is still starting (not ready, no pod yet, or ready for less
   than the startup grace period): a replica that has just become ready is not yet loaded and would make
   the fleet look idle.
6. Steps are bounded: at most `max_step_replicas` (or `max_step_percent`, whichever allows more) added or
   removed within `period_seconds` (0: per decision), then min/max replicas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from gptoss_runtime.contract import (
    METRIC_KV_CACHE_UTILIZATION,
    METRIC_REQUESTS_RUNNING,
    METRIC_REQUESTS_WAITING,
    METRIC_TIME_TO_FIRST_TOKEN,
)

from .signals import ReplicaSignals, merge_windows

# Signal names, as the spec's `autoscaling.targets` and `status.autoscaling.decisions[].signals` spell them.
SIGNAL_WAITING = "requestsWaitingPerReplica"
SIGNAL_RUNNING = "requestsRunningPerReplica"
SIGNAL_KV_CACHE = "kvCacheUtilization"
SIGNAL_TTFT = "timeToFirstTokenSeconds"

_SIGNAL_WORDS = {
    SIGNAL_WAITING: "requests waiting per replica",
    SIGNAL_RUNNING: "requests running per replica",
    SIGNAL_KV_CACHE: "KV cache utilization",
    SIGNAL_TTFT: "time to first token (s)",
}
_SIGNAL_CODES = {
    SIGNAL_WAITING: "requests_waiting",
    SIGNAL_RUNNING: "requests_running",
    SIGNAL_KV_CACHE: "kv_cache_utilization",
    SIGNAL_TTFT: "time_to_first_token",
}
_SIGNAL_METRIC = {
    SIGNAL_WAITING: METRIC_REQUESTS_WAITING,
    SIGNAL_RUNNING: METRIC_REQUESTS_RUNNING,
    SIGNAL_KV_CACHE: METRIC_KV_CACHE_UTILIZATION,
    SIGNAL_TTFT: METRIC_TIME_TO_FIRST_TOKEN,
}
# Recommendations are products of floats; do not let 4 * 0.75 / 0.75 = 3.0000000004 ask for a 4th replica.
_EPSILON = 1e-9
_UNBOUNDED = 10**9


class Direction(StrEnum):
    """What a decision does; `hold` means it declined to decide (missing data, replicas starting)."""

    UP = "up"
    DOWN = "down"
    NONE = "none"
    HOLD = "hold"


@dataclass(frozen=True)
class Targets:
    """Per-replica targets; None leaves a signal out. At least one must be set."""

    requests_waiting_per_replica: float | None = 4.0
    requests_running_per_replica: float | None = None
    kv_cache_utilization: float | None = 0.85
    time_to_first_token_seconds: float | None = None

    def by_signal(self) -> dict[str, float]:
        """The targets that are set, keyed by signal name."""
        pairs = {
            SIGNAL_WAITING: self.requests_waiting_per_replica,
            SIGNAL_RUNNING: self.requests_running_per_replica,
            SIGNAL_KV_CACHE: self.kv_cache_utilization,
            SIGNAL_TTFT: self.time_to_first_token_seconds,
        }
        return {name: value for name, value in pairs.items() if value is not None}


@dataclass(frozen=True)
class Behavior:
    """How fast one direction moves."""

    stabilization_window_seconds: float
    max_step_replicas: int | None = None  # None (and no percent): unbounded
    max_step_percent: float | None = None
    period_seconds: float = 0.0  # the step limit counts changes made within this period; 0: per decision
    tolerance: float = 0.1  # relative deviation from the target that causes no change


# Without a requestsRunningPerReplica target, the adapter sets one from the replica's batch limit: the
# share of the concurrency limit the fleet is kept at, leaving headroom for a burst during a cold start.
RUNNING_TARGET_FRACTION = 0.7


def default_running_target(max_batch_size: int) -> float:
    """The requestsRunningPerReplica target for replicas that schedule at most `max_batch_size` sequences."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    return RUNNING_TARGET_FRACTION * max_batch_size


DEFAULT_SCALE_UP = Behavior(stabilization_window_seconds=0.0, max_step_replicas=2, period_seconds=0.0)
DEFAULT_SCALE_DOWN = Behavior(stabilization_window_seconds=300.0, max_step_replicas=1, period_seconds=0.0)


@dataclass(frozen=True)
class PolicyConfig:
    """Everything the decision depends on besides its inputs (mapped from the spec by an adapter)."""

    min_replicas: int = 1
    max_replicas: int = 4
    targets: Targets = field(default_factory=Targets)
    scale_up: Behavior = DEFAULT_SCALE_UP
    scale_down: Behavior = DEFAULT_SCALE_DOWN
    startup_grace_seconds: float = 60.0
    ttft_quantile: float = 0.9
    ttft_min_observations: int = 20  # fewer first tokens in the window say nothing reliable about latency

    def __post_init__(self) -> None:
        _check(self.min_replicas >= 0, "minReplicas", f"must be >= 0, got {self.min_replicas}")
        _check(
            self.max_replicas >= max(1, self.min_replicas),
            "maxReplicas",
            f"must be >= 1 and >= minReplicas ({self.min_replicas}), got {self.max_replicas}",
        )
        targets = self.targets.by_signal()
        _check(bool(targets), "targets", "set at least one target, e.g. requestsWaitingPerReplica: 4")
        for name, value in targets.items():
            _check(value > 0, f"targets.{name}", f"must be > 0, got {value}")
        if self.targets.kv_cache_utilization is not None:
            _check(
                self.targets.kv_cache_utilization <= 1,
                f"targets.{SIGNAL_KV_CACHE}",
                f"is a ratio in (0, 1], got {self.targets.kv_cache_utilization}",
            )
        for prefix, behavior in (("scaleUp", self.scale_up), ("scaleDown", self.scale_down)):
            _check_behavior(prefix, behavior)
        _check(self.startup_grace_seconds >= 0, "startupGraceSeconds", "must be >= 0")
        _check(0 < self.ttft_quantile < 1, "ttftQuantile", f"must lie in (0, 1), got {self.ttft_quantile}")
        _check(self.ttft_min_observations >= 1, "ttftMinObservations", "must be >= 1")

    @property
    def history_seconds(self) -> float:
        """How far back the decision looks into its history."""
        return max(
            self.scale_up.stabilization_window_seconds,
            self.scale_down.stabilization_window_seconds,
            self.scale_up.period_seconds,
            self.scale_down.period_seconds,
        )


@dataclass(frozen=True)
class Recommendation:
    time: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True)
class DecisionHistory:
    """Past recommendations (for stabilization) and applied changes (for step limits), oldest first."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()
    started: float | None = None  # first recorded recommendation: windows reaching further back wait

    def record(
        self, now: float, decision: Decision, config: PolicyConfig, applied: int | None = None
    ) -> DecisionHistory:
        """The history after `decision`, of which `applied` replicas were really set (default: desired).

        `applied` differs from `decision.desired` when the capacity cap lowered it. Entries older than
        the longest window are dropped; a held decision on missing data adds no recommendation.
        """
        applied_replicas = decision.desired if applied is None else applied
        recommendations, started = self.recommendations, self.started
        if decision.recommendation is not None:
            recommendations = (*recommendations, Recommendation(now, decision.recommendation))
            started = now if started is None else started
        events = self.scale_events
        if applied_replicas != decision.current:
            events = (*events, ScaleEvent(now, decision.current, applied_replicas))
        cutoff = now - config.history_seconds
        return DecisionHistory(
            recommendations=tuple(r for r in recommendations if r.time >= cutoff),
            scale_events=tuple(e for e in events if e.time >= cutoff),
            started=started,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, e.g. to keep the history across operator restarts."""
        return {
            "recommendations": [[r.time, r.replicas] for r in self.recommendations],
            "scaleEvents": [[e.time, e.from_replicas, e.to_replicas] for e in self.scale_events],
            "started": self.started,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionHistory:
        """The inverse of `to_dict`; malformed input raises ValueError naming the field."""
        try:
            return cls(
                recommendations=tuple(Recommendation(float(t), int(n)) for t, n in data.get("recommendations", [])),
                scale_events=tuple(ScaleEvent(float(t), int(a), int(b)) for t, a, b in data.get("scaleEvents", [])),
                started=None if data.get("started") is None else float(data["started"]),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"autoscaling history: expected [[time, replicas], ...] lists: {error}") from error


@dataclass(frozen=True)
class Decision:
    """One decision: what to set, why, and what it saw."""

    current: int
    desired: int
    direction: Direction
    reason: str
    recommendation: int | None = None  # the raw recommendation before stabilization; None when held
    signals: Mapping[str, float] = field(default_factory=dict)  # observed values, by signal name
    recommendations: Mapping[str, int] = field(default_factory=dict)  # per signal
    limited_by: tuple[str, ...] = ()  # stabilization, step, minReplicas, maxReplicas, startup
    code: str = ""  # a short token for metric labels: the driving signal or why it held

    def status_entry(self, time_rfc3339: str) -> dict[str, Any]:
        """One entry of `status.autoscaling.decisions`."""
        return {
            "time": time_rfc3339,
            "fromReplicas": self.current,
            "toReplicas": self.desired,
            "reason": self.reason,
            "signals": {name: round(value, 4) for name, value in self.signals.items()},
        }


def decide(
    now: float,
    current_replicas: int,
    signals: Sequence[ReplicaSignals],
    history: DecisionHistory,
    config: PolicyConfig,
) -> Decision:
    """The desired replica count for a fleet of `current_replicas` that reported `signals` at `now`.

    `signals` holds one entry per server pod that exists (ready or not), leaving out pods being deleted
    (they are not ready and would block every scale-down); pods that `current_replicas` asks for but that
    do not exist yet count as starting.
    """
    if current_replicas < config.min_replicas:
        return Decision(
            current_replicas,
            config.min_replicas,
            Direction.UP,
            f"scale up {current_replicas} -> {config.min_replicas}: below minReplicas {config.min_replicas}",
            limited_by=("minReplicas",),
            code="min_replicas",
        )
    if current_replicas > config.max_replicas:
        return Decision(
            current_replicas,
            config.max_replicas,
            Direction.DOWN,
            f"scale down {current_replicas} -> {config.max_replicas}: above maxReplicas {config.max_replicas}",
            limited_by=("maxReplicas",),
            code="max_replicas",
        )
    if current_replicas == 0:
        return _hold(0, "stay at 0: minReplicas is 0 and scaled-to-zero replicas report no signals", "scaled_to_zero")
    ready = [s for s in signals if s.ready]
    missing = _missing_metrics(ready, config.targets)
    if missing:
        reason = f"hold at {current_replicas}: {missing}; no decision on missing data"
        return _hold(current_replicas, reason, "missing_metrics")
    if not ready:
        reason = f"hold at {current_replicas}: no replica is ready to report signals yet"
        return _hold(current_replicas, reason, "no_ready_replicas")

    observed, per_signal = _recommend(current_replicas, ready, config)
    raw = max(per_signal.values(), default=current_replicas)
    base = Decision(current_replicas, current_replicas, Direction.NONE, "", raw, observed, per_signal)
    stabilized = _stabilize(now, current_replicas, raw, history, config)
    if stabilized > current_replicas:
        return _scale_up(now, base, stabilized, history, config)
    if stabilized < current_replicas:
        return _scale_down(now, base, stabilized, signals, history, config)
    code = "within_tolerance" if raw == current_replicas else "stabilization"
    if not per_signal:
        code = "insufficient_data"
    return replace(base, reason=_steady_reason(base, raw, config), code=code)


def _scale_up(now: float, base: Decision, stabilized: int, history: DecisionHistory, config: PolicyConfig) -> Decision:
    limited: list[str] = ["stabilization"] if stabilized < (base.recommendation or 0) else []
    limit = _up_limit(now, base.current, history, config.scale_up)
    desired = stabilized
    if desired > limit:
        desired, limited = limit, [*limited, "step"]
    if desired > config.max_replicas:
        desired, limited = config.max_replicas, [*limited, "maxReplicas"]
    desired = max(desired, base.current)
    direction = Direction.UP if desired > base.current else Direction.NONE
    reason = _move_reason("scale up", base, desired, limited, config)
    code = _driver(base)
    return replace(base, desired=desired, direction=direction, reason=reason, limited_by=tuple(limited), code=code)


def _scale_down(
    now: float,
    base: Decision,
    stabilized: int,
    signals: Sequence[ReplicaSignals],
    history: DecisionHistory,
    config: PolicyConfig,
) -> Decision:
    starting = _starting_words(now, base.current, signals, config.startup_grace_seconds)
    if starting:
        reason = f"hold at {base.current}: scale-down to {stabilized} deferred while replicas start ({starting})"
        return replace(base, direction=Direction.HOLD, reason=reason, limited_by=("startup",), code="replicas_starting")
    limited: list[str] = ["stabilization"] if stabilized > (base.recommendation or 0) else []
    limit = _down_limit(now, base.current, history, config.scale_down)
    desired = stabilized
    if desired < limit:
        desired, limited = limit, [*limited, "step"]
    if desired < config.min_replicas:
        desired, limited = config.min_replicas, [*limited, "minReplicas"]
    desired = min(desired, base.current)
    direction = Direction.DOWN if desired < base.current else Direction.NONE
    reason = _move_reason("scale down", base, desired, limited, config)
    code = _driver(base)
    return replace(base, desired=desired, direction=direction, reason=reason, limited_by=tuple(limited), code=code)


def _hold(current: int, reason: str, code: str) -> Decision:
    return Decision(current, current, Direction.HOLD, reason, code=code)


def _driver(decision: Decision) -> str:
    """The metric-label token of the signal that asked for the most replicas."""
    if not decision.recommendations:
        return "insufficient_data"
    name = max(decision.recommendations, key=lambda n: decision.recommendations[n])
    return _SIGNAL_CODES[name]


def _missing_metrics(ready: Sequence[ReplicaSignals], targets: Targets) -> str:
    """Words naming the ready pods that lack a metric with a target ('' when none lack any)."""
    wanted = targets.by_signal()
    gaps: list[str] = []
    for replica in ready:
        values = {
            SIGNAL_WAITING: replica.requests_waiting,
            SIGNAL_RUNNING: replica.requests_running,
            SIGNAL_KV_CACHE: replica.kv_cache_utilization,
            SIGNAL_TTFT: replica.ttft_window,
        }
        absent = [_SIGNAL_METRIC[name] for name in wanted if values[name] is None]
        if absent:
            gaps.append(f"pod {replica.pod} reports no {', '.join(absent)}")
    if len(gaps) > 3:
        gaps = [*gaps[:3], f"and {len(gaps) - 3} more pods"]
    return "; ".join(gaps)


def _recommend(
    current: int, ready: Sequence[ReplicaSignals], config: PolicyConfig
) -> tuple[dict[str, float], dict[str, int]]:
    """Observed value and replica recommendation per signal that has a target (and enough data)."""
    observed: dict[str, float] = {}
    gauges = {
        SIGNAL_WAITING: [r.requests_waiting for r in ready],
        SIGNAL_RUNNING: [r.requests_running for r in ready],
        SIGNAL_KV_CACHE: [r.kv_cache_utilization for r in ready],
    }
    for name, values in gauges.items():
        present = [v for v in values if v is not None]
        if present:
            observed[name] = math.fsum(present) / len(present)
    try:
        fleet_ttft = merge_windows(r.ttft_window for r in ready if r.ttft_window is not None)
    except ValueError:
        fleet_ttft = None  # replicas with different bucket bounds (a rollout between versions): skip TTFT
    ttft_observations = fleet_ttft.counts[-1] if fleet_ttft is not None else 0.0
    if fleet_ttft is not None:
        quantile = fleet_ttft.quantile(config.ttft_quantile)
        if quantile is not None:
            observed[SIGNAL_TTFT] = quantile
    recommendations: dict[str, int] = {}
    for name, target in config.targets.by_signal().items():
        if name not in observed:
            continue
        if name == SIGNAL_TTFT and ttft_observations < config.ttft_min_observations:
            continue
        ratio = observed[name] / target
        if 1 - config.scale_down.tolerance <= ratio <= 1 + config.scale_up.tolerance:
            recommendations[name] = current
        else:
            recommendations[name] = max(0, math.ceil(len(ready) * ratio - _EPSILON))
    return observed, recommendations


def _stabilize(now: float, current: int, raw: int, history: DecisionHistory, config: PolicyConfig) -> int:
    """HPA stabilization: up to the lowest recent recommendation, down to the highest recent one.

    A window not covered by recorded recommendations (it reaches back before the first one, or holds none
    after a long hold on missing data) counts the current replica count as a recommendation: after an
    operator restart the autoscaler waits a full window before it acts on a trend.
    """
    up = min(_window(now, current, raw, history, config.scale_up.stabilization_window_seconds))
    down = max(_window(now, current, raw, history, config.scale_down.stabilization_window_seconds))
    recommendation = current
    if recommendation < up:
        recommendation = up
    if recommendation > down:
        recommendation = down
    return recommendation


def _window(now: float, current: int, raw: int, history: DecisionHistory, seconds: float) -> list[int]:
    if seconds <= 0:
        return [raw]
    cutoff = now - seconds
    recent = [r.replicas for r in history.recommendations if r.time >= cutoff]
    if not recent or history.started is None or history.started > cutoff:
        recent.append(current)  # the window is not covered by data (start, restart, or a long hold)
    return [raw, *recent]


def _up_limit(now: float, current: int, history: DecisionHistory, behavior: Behavior) -> int:
    if behavior.max_step_replicas is None and behavior.max_step_percent is None:
        return _UNBOUNDED
    added = sum(
        e.to_replicas - e.from_replicas
        for e in history.scale_events
        if e.to_replicas > e.from_replicas and e.time > now - behavior.period_seconds
    )
    period_start = max(0, current - added)
    allowed = 0
    if behavior.max_step_replicas is not None:
        allowed = max(allowed, behavior.max_step_replicas)
    if behavior.max_step_percent is not None:
        allowed = max(allowed, math.ceil(period_start * behavior.max_step_percent / 100 - _EPSILON))
    return period_start + allowed


def _down_limit(now: float, current: int, history: DecisionHistory, behavior: Behavior) -> int:
    if behavior.max_step_replicas is None and behavior.max_step_percent is None:
        return 0
    removed = sum(
        e.from_replicas - e.to_replicas
        for e in history.scale_events
        if e.to_replicas < e.from_replicas and e.time > now - behavior.period_seconds
    )
    period_start = current + removed
    allowed = 0
    if behavior.max_step_replicas is not None:
        allowed = max(allowed, behavior.max_step_replicas)
    if behavior.max_step_percent is not None:
        allowed = max(allowed, math.floor(period_start * behavior.max_step_percent / 100 + _EPSILON))
    return max(0, period_start - allowed)


def _starting_words(now: float, current: int, signals: Sequence[ReplicaSignals], grace: float) -> str:
    """Words naming the replicas that are still starting ('' when none are)."""
    words: list[str] = []
    for replica in signals:
        if not replica.ready:
            words.append(f"pod {replica.pod} not ready")
        elif replica.started_at is not None and now - replica.started_at < grace:
            words.append(f"pod {replica.pod} ready for {now - replica.started_at:.0f} s < {grace:g} s grace")
    absent = current - len(signals)
    if absent > 0:
        words.append(f"{absent} replica{'s' if absent > 1 else ''} without a pod yet")
    if len(words) > 3:
        words = [*words[:3], f"and {len(words) - 3} more"]
    return ", ".join(words)


def _driver_words(decision: Decision, config: PolicyConfig) -> str:
    """The signal that asked for the most replicas, with its value, target and recommendation."""
    if not decision.recommendations:
        return "no signal has enough data"
    name = max(decision.recommendations, key=lambda n: decision.recommendations[n])
    target = config.targets.by_signal()[name]
    value = decision.signals[name]
    relation = ">" if value > target else "<=" if value == target else "<"
    return (
        f"{_SIGNAL_WORDS[name]} {_fmt(value)} {relation} target {_fmt(target)} "
        f"(recommends {decision.recommendations[name]})"
    )


def _move_reason(verb: str, base: Decision, desired: int, limited: Sequence[str], config: PolicyConfig) -> str:
    move = f"{verb} {base.current} -> {desired}" if desired != base.current else f"stay at {base.current}"
    return f"{move}: {_driver_words(base, config)}{_limit_words(limited, config)}"


def _limit_words(limited: Sequence[str], config: PolicyConfig) -> str:
    words = {
        "stabilization": "stabilization window holds it",
        "step": "step limited",
        "maxReplicas": f"capped at maxReplicas {config.max_replicas}",
        "minReplicas": f"kept at minReplicas {config.min_replicas}",
    }
    return "".join(f"; {words[item]}" for item in limited)


def _steady_reason(decision: Decision, raw: int, config: PolicyConfig) -> str:
    current = decision.current
    if not decision.recommendations:
        return f"stay at {current}: no signal has enough data to recommend a change"
    if raw == current:
        parts = [
            f"{_SIGNAL_WORDS[n]} {_fmt(decision.signals[n])}/{_fmt(config.targets.by_signal()[n])}"
            for n in decision.recommendations
        ]
        return f"stay at {current}: signals within tolerance of their targets ({', '.join(parts)})"
    direction = "up" if raw > current else "down"
    window = (config.scale_up if raw > current else config.scale_down).stabilization_window_seconds
    return (
        f"stay at {current}: {_driver_words(decision, config)}, but the {direction}-scale stabilization "
        f"window ({window:g} s) holds it"
    )


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _check(ok: bool, field_name: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"autoscaling.{field_name}: {problem}")


def _check_behavior(prefix: str, behavior: Behavior) -> None:
    _check(behavior.stabilization_window_seconds >= 0, f"{prefix}.stabilizationWindowSeconds", "must be >= 0")
    _check(behavior.period_seconds >= 0, f"{prefix}.periodSeconds", "must be >= 0")
    _check(0 <= behavior.tolerance <= 1, f"{prefix}.tolerance", f"must lie in [0, 1], got {behavior.tolerance}")
    if behavior.max_step_replicas is not None:
        _check(behavior.max_step_replicas >= 1, f"{prefix}.maxStepReplicas", "must be >= 1 (or left out)")
    if behavior.max_step_percent is not None:
        _check(behavior.max_step_percent > 0, f"{prefix}.maxStepPercent", "must be > 0 (or left out)")
