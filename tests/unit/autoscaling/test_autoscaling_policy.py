"""The decision function, table by table."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from gptoss_operator.autoscaling.policy import (
    RUNNING_TARGET_FRACTION,
    SIGNAL_KV_CACHE,
    SIGNAL_RUNNING,
    SIGNAL_TTFT,
    SIGNAL_WAITING,
    Behavior,
    Decision,
    DecisionHistory,
    Direction,
    PolicyConfig,
    Recommendation,
    ScaleEvent,
    Targets,
    decide,
    default_running_target,
)
from gptoss_operator.autoscaling.signals import Histogram, ReplicaSignals

NOW = 10_000.0
LONG_AGO = 0.0
WAITING_ONLY = Targets(requests_waiting_per_replica=4, kv_cache_utilization=None)
# No stabilization and no step limit: each table isolates one rule.
PLAIN = PolicyConfig(
    min_replicas=1,
    max_replicas=10,
    targets=WAITING_ONLY,
    scale_up=Behavior(stabilization_window_seconds=0),
    scale_down=Behavior(stabilization_window_seconds=0),
    startup_grace_seconds=60,
)


def fleet(*waiting: float, kv: float | None = None, started_at: float = LONG_AGO) -> list[ReplicaSignals]:
    return [
        ReplicaSignals(
            pod=f"pod-{i}",
            ready=True,
            started_at=started_at,
            requests_waiting=w,
            requests_running=0.0,
            kv_cache_utilization=kv,
            ttft_window=None,
        )
        for i, w in enumerate(waiting)
    ]


# ------------------------------------------------------------------------------------ target tracking
@pytest.mark.parametrize(
    ("waiting", "expected", "direction"),
    [
        ((4, 4), 2, Direction.NONE),  # exactly on target
        ((8, 8), 4, Direction.UP),  # twice the target: twice the replicas
        ((9, 8), 5, Direction.UP),  # ceil(2 * 8.5 / 4) = 5
        ((2, 2), 1, Direction.DOWN),  # half the target
        ((0, 0), 1, Direction.DOWN),  # idle: down to minReplicas
        ((4.3, 4.3), 2, Direction.NONE),  # +7.5%: inside the 10% tolerance
        ((3.7, 3.7), 2, Direction.NONE),  # -7.5%: inside the tolerance
        ((4.6, 4.6), 3, Direction.UP),  # +15%: outside, ceil(2 * 1.15) = 3
    ],
)
def test_target_tracking_with_tolerance(waiting: tuple[float, ...], expected: int, direction: Direction) -> None:
    decision = decide(NOW, len(waiting), fleet(*waiting), DecisionHistory(), PLAIN)
    assert (decision.desired, decision.direction) == (expected, direction)
    assert decision.signals[SIGNAL_WAITING] == pytest.approx(sum(waiting) / len(waiting))


def test_the_busiest_signal_wins_and_the_reason_names_it() -> None:
    config = replace(PLAIN, targets=Targets(requests_waiting_per_replica=4, kv_cache_utilization=0.5))
    decision = decide(NOW, 2, fleet(1, 1, kv=1.0), DecisionHistory(), config)
    assert decision.recommendations == {SIGNAL_WAITING: 1, SIGNAL_KV_CACHE: 4}
    assert decision.desired == 4
    assert decision.reason == "scale up 2 -> 4: KV cache utilization 1 > target 0.5 (recommends 4)"


def test_float_noise_does_not_add_a_replica() -> None:
    config = replace(PLAIN, targets=Targets(requests_waiting_per_replica=None, kv_cache_utilization=0.7))
    decision = decide(NOW, 3, fleet(0, 0, 0, kv=0.7 * 4 / 3), DecisionHistory(), config)
    assert decision.desired == 4


# ---------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize(
    ("current", "waiting", "expected", "limited_by"),
    [
        (5, 100.0, 10, ("maxReplicas",)),  # asks for 125
        (2, 0.0, 1, ("minReplicas",)),  # idle: recommends 0, kept at min
        (12, 4.0, 10, ("maxReplicas",)),  # above max (spec changed): straight down to max
        (0, 0.0, 1, ("minReplicas",)),  # below min: up to min without signals
    ],
)
def test_bounds(current: int, waiting: float, expected: int, limited_by: tuple[str, ...]) -> None:
    decision = decide(NOW, current, fleet(*([waiting] * current)), DecisionHistory(), PLAIN)
    assert decision.desired == expected
    assert decision.limited_by == limited_by


def test_min_replicas_stops_a_scale_down() -> None:
    config = replace(PLAIN, min_replicas=3)
    decision = decide(NOW, 4, fleet(0, 0, 0, 0), DecisionHistory(), config)
    assert decision.desired == 3
    assert "minReplicas" in decision.limited_by
    assert "kept at minReplicas 3" in decision.reason


def test_scaled_to_zero_stays_there() -> None:
    config = replace(PLAIN, min_replicas=0)
    decision = decide(NOW, 0, [], DecisionHistory(), config)
    assert (decision.desired, decision.direction) == (0, Direction.HOLD)


# ------------------------------------------------------------------------------------ missing metrics
@pytest.mark.parametrize(
    ("signals", "expected_words"),
    [
        (
            [*fleet(50), ReplicaSignals(pod="pod-x", ready=True, started_at=LONG_AGO)],
            "pod pod-x reports no gptoss_requests_waiting",
        ),
        ([ReplicaSignals(pod="pod-y", ready=False, started_at=None)], "no replica is ready"),
        ([], "no replica is ready"),
    ],
)
def test_no_decision_on_missing_data(signals: list[ReplicaSignals], expected_words: str) -> None:
    decision = decide(NOW, 2, signals, DecisionHistory(), PLAIN)
    assert (decision.desired, decision.direction) == (2, Direction.HOLD)
    assert expected_words in decision.reason
    assert decision.recommendation is None


def test_a_metric_without_a_target_may_be_missing() -> None:
    signals = [replace(s, requests_running=None, kv_cache_utilization=None) for s in fleet(8, 8)]
    decision = decide(NOW, 2, signals, DecisionHistory(), PLAIN)
    assert decision.desired == 4


def test_a_not_ready_pod_without_metrics_does_not_block_a_scale_up() -> None:
    signals = [*fleet(12, 12), ReplicaSignals(pod="pod-new", ready=False, started_at=None)]
    decision = decide(NOW, 3, signals, DecisionHistory(), PLAIN)
    # Load for ceil(2 * 12 / 4) = 6 replicas; the starting one counts as capacity on its way.
    assert (decision.desired, decision.direction) == (6, Direction.UP)


def test_missing_ttft_histogram_holds_when_ttft_has_a_target() -> None:
    config = replace(
        PLAIN,
        targets=Targets(requests_waiting_per_replica=4, kv_cache_utilization=None, time_to_first_token_seconds=1.0),
    )
    decision = decide(NOW, 2, fleet(8, 8), DecisionHistory(), config)
    assert decision.direction is Direction.HOLD
    assert decision.reason == (
        "hold at 2: pod pod-0 reports no gptoss_time_to_first_token_seconds; "
        "pod pod-1 reports no gptoss_time_to_first_token_seconds; no decision on missing data"
    )


# ------------------------------------------------------------------------------------------------ TTFT
def window(counts: Sequence[float]) -> Histogram:
    return Histogram(bounds=(0.5, 1.0, 2.0, 4.0, math.inf), counts=tuple(counts), total=counts[-1], sum=0.0)


@pytest.mark.parametrize(
    ("counts", "expected", "observed"),
    [
        ((0, 0, 0, 30, 30), 6, 3.8),  # p90 in (2, 4]: 3.8 s against 1 s asks for 8, max is 6
        ((30, 30, 30, 30, 30), 1, 0.45),  # fast: p90 0.45 s
        ((0, 0, 0, 5, 5), 2, None),  # 5 first tokens < 20: too few to judge, TTFT says nothing
    ],
)
def test_ttft_from_merged_windows(counts: Sequence[float], expected: int, observed: float | None) -> None:
    config = replace(
        PLAIN,
        max_replicas=6,
        targets=Targets(requests_waiting_per_replica=None, kv_cache_utilization=None, time_to_first_token_seconds=1),
    )
    # Two replicas each saw half of the window's first tokens.
    half = window([c / 2 for c in counts])
    signals = [replace(s, ttft_window=half) for s in fleet(0, 0)]
    decision = decide(NOW, 2, signals, DecisionHistory(), config)
    assert decision.desired == expected
    if observed is None:
        assert SIGNAL_TTFT not in decision.recommendations
    else:
        assert decision.signals[SIGNAL_TTFT] == pytest.approx(observed)


# --------------------------------------------------------------------------------- starting replicas
@pytest.mark.parametrize(
    ("signals", "current", "words"),
    [
        ([*fleet(0, 0), ReplicaSignals(pod="pod-s", ready=False, started_at=None)], 3, "pod pod-s not ready"),
        (fleet(0, 0, 0, started_at=NOW - 20), 3, "ready for 20 s < 60 s grace"),
        (fleet(0, 0), 3, "1 replica without a pod yet"),
    ],
)
def test_scale_down_waits_for_starting_replicas(signals: list[ReplicaSignals], current: int, words: str) -> None:
    decision = decide(NOW, current, signals, DecisionHistory(), PLAIN)
    assert (decision.desired, decision.direction) == (current, Direction.HOLD)
    assert decision.limited_by == ("startup",)
    assert words in decision.reason
    assert decision.recommendation == 0  # the recommendation is still recorded for stabilization


def test_grace_period_over_allows_scale_down() -> None:
    decision = decide(NOW, 3, fleet(0, 0, 0, started_at=NOW - 61), DecisionHistory(), PLAIN)
    assert decision.desired == 1


# ------------------------------------------------------------------------------------- stabilization
def run(config: PolicyConfig, waiting_per_step: Sequence[float], start: int, interval: float = 10.0) -> list[int]:
    """Feed a fleet's average waiting per replica every `interval` seconds; return replicas after each step."""
    replicas, history, now, out = start, DecisionHistory(), NOW, []
    for waiting in waiting_per_step:
        decision = decide(now, replicas, fleet(*([waiting] * replicas)), history, config)
        history = history.record(now, decision, config)
        replicas = decision.desired
        out.append(replicas)
        now += interval
    return out


STABLE = replace(
    PLAIN,
    scale_up=Behavior(stabilization_window_seconds=30),
    scale_down=Behavior(stabilization_window_seconds=60),
)


@pytest.mark.parametrize(
    ("config", "waiting", "expected"),
    [
        # Flapping load around the target without stabilization flaps replicas...
        (PLAIN, [8, 2, 8, 2, 8, 2], [4, 2, 4, 2, 4, 2]),
        # ...with it, the spikes do not last the 30 s scale-up window and the dips not the 60 s down one.
        (STABLE, [8, 2, 8, 2, 8, 2], [2, 2, 2, 2, 2, 2]),
        # A sustained rise scales up once the scale-up window has seen it throughout (t=0,10,20,30).
        (STABLE, [8, 8, 8, 8, 8], [2, 2, 2, 4, 4]),
        # A sustained fall waits the longer scale-down window.
        (STABLE, [1, 1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 1, 1]),
    ],
)
def test_stabilization_windows(config: PolicyConfig, waiting: list[float], expected: list[int]) -> None:
    assert run(config, waiting, start=2) == expected


def test_stabilized_reason_says_so() -> None:
    history = DecisionHistory(recommendations=(Recommendation(NOW - 10, 4),), started=NOW - 100)
    decision = decide(NOW, 4, fleet(0, 0, 0, 0), history, STABLE)
    assert decision.desired == 4
    assert "stabilization window (60 s) holds it" in decision.reason


# ----------------------------------------------------------------------------------------- step limits
@pytest.mark.parametrize(
    ("behavior", "events", "expected"),
    [
        (Behavior(0, max_step_replicas=2), (), 4),  # per decision: +2
        (Behavior(0, max_step_percent=100), (), 4),  # 100% of 2
        (Behavior(0, max_step_replicas=1, max_step_percent=200), (), 6),  # the more generous one wins
        # +2 within the last 60 s already used the budget of a fleet that started the period at 2.
        (Behavior(0, max_step_replicas=2, period_seconds=60), (ScaleEvent(NOW - 30, 2, 4),), 4),
        (Behavior(0, max_step_replicas=2, period_seconds=60), (ScaleEvent(NOW - 90, 2, 4),), 6),
    ],
)
def test_scale_up_steps(behavior: Behavior, events: tuple[ScaleEvent, ...], expected: int) -> None:
    config = replace(PLAIN, scale_up=behavior)
    current = events[-1].to_replicas if events else 2
    decision = decide(NOW, current, fleet(*([40] * current)), DecisionHistory(scale_events=events), config)
    assert decision.desired == expected
    if expected < 10:
        assert "step" in decision.limited_by
        assert "step limited" in decision.reason


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        (Behavior(0, max_step_replicas=1), 7),
        (Behavior(0, max_step_percent=50), 4),
        (Behavior(0), 1),
    ],
)
def test_scale_down_steps(behavior: Behavior, expected: int) -> None:
    config = replace(PLAIN, scale_down=behavior)
    decision = decide(NOW, 8, fleet(*([0] * 8)), DecisionHistory(), config)
    assert decision.desired == expected


# --------------------------------------------------------------------------------------------- history
def test_history_keeps_only_the_window_and_records_what_was_applied() -> None:
    config = replace(PLAIN, scale_down=Behavior(stabilization_window_seconds=100))
    decision = Decision(current=2, desired=5, direction=Direction.UP, reason="", recommendation=5)
    old = DecisionHistory(recommendations=(Recommendation(NOW - 500, 9),), started=NOW - 500)
    history = old.record(NOW, decision, config, applied=3)
    assert history.started == NOW - 500
    assert history.recommendations == (Recommendation(NOW, 5),)
    assert history.scale_events == (ScaleEvent(NOW, 2, 3),)
    assert DecisionHistory.from_dict(history.to_dict()) == history


def test_held_decision_records_no_recommendation() -> None:
    held = decide(NOW, 2, [], DecisionHistory(), PLAIN)
    assert held.direction is Direction.HOLD
    assert held.recommendation is None
    assert DecisionHistory().record(NOW, held, PLAIN) == DecisionHistory()


def test_history_from_bad_dict_names_the_problem() -> None:
    with pytest.raises(ValueError, match="autoscaling history"):
        DecisionHistory.from_dict({"recommendations": [["x"]]})


def test_status_entry() -> None:
    decision = decide(NOW, 2, fleet(8, 8), DecisionHistory(), PLAIN)
    entry = decision.status_entry("2026-11-25T08:00:00Z")
    assert entry["fromReplicas"] == 2
    assert entry["toReplicas"] == 4
    assert entry["signals"] == {SIGNAL_WAITING: 8.0, SIGNAL_RUNNING: 0.0}  # observed, with or without a target
    assert entry["reason"].startswith("scale up 2 -> 4: requests waiting per replica 8 > target 4")


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "autoscaling.maxReplicas"),
        ({"targets": Targets(None, None, None, None)}, "autoscaling.targets: set at least one"),
        ({"targets": Targets(requests_waiting_per_replica=0)}, "autoscaling.targets.requestsWaitingPerReplica"),
        ({"targets": Targets(kv_cache_utilization=1.5)}, "autoscaling.targets.kvCacheUtilization"),
        ({"scale_up": Behavior(-1)}, "autoscaling.scaleUp.stabilizationWindowSeconds"),
        ({"scale_down": Behavior(0, tolerance=1.5)}, "autoscaling.scaleDown.tolerance"),
        ({"scale_down": Behavior(0, max_step_replicas=0)}, "autoscaling.scaleDown.maxStepReplicas"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ metric-label codes
@pytest.mark.parametrize(
    ("current", "signals", "code"),
    [
        (2, fleet(8, 8), "requests_waiting"),
        (2, fleet(0, 0), "requests_waiting"),  # the scale-down's driving signal
        (2, fleet(4, 4), "within_tolerance"),
        (2, [ReplicaSignals(pod="p", ready=True)], "missing_metrics"),
        (2, [], "no_ready_replicas"),
        (3, fleet(0, 0), "replicas_starting"),
        (0, [], "min_replicas"),
        (11, fleet(*[4] * 11), "max_replicas"),
    ],
)
def test_decision_codes_for_metric_labels(current: int, signals: list[ReplicaSignals], code: str) -> None:
    assert decide(NOW, current, signals, DecisionHistory(), PLAIN).code == code


def test_default_running_target_leaves_headroom_below_the_batch_limit() -> None:
    assert default_running_target(64) == pytest.approx(64 * RUNNING_TARGET_FRACTION)
    assert 0 < RUNNING_TARGET_FRACTION < 1
    with pytest.raises(ValueError, match="max_batch_size"):
        default_running_target(0)


def test_ttft_windows_with_different_buckets_are_skipped_not_fatal() -> None:
    targets = Targets(requests_waiting_per_replica=4, kv_cache_utilization=None, time_to_first_token_seconds=1)
    config = replace(PLAIN, targets=targets)
    other = Histogram(bounds=(1.0, math.inf), counts=(0.0, 50.0), total=50.0, sum=200.0)
    signals = fleet(8, 8)
    signals = [replace(signals[0], ttft_window=window([0, 0, 0, 50, 50])), replace(signals[1], ttft_window=other)]
    decision = decide(NOW, 2, signals, DecisionHistory(), config)
    assert SIGNAL_TTFT not in decision.recommendations
    assert decision.desired == 4  # the waiting signal still decides


# ------------------------------------------------------------------------------------------ invariants
def random_signals(rng: random.Random, replicas: int, load: float) -> list[ReplicaSignals]:
    """A fleet under a load level (1: on target): mostly complete, sometimes a pod missing, starting or silent."""
    count = replicas if rng.random() < 0.8 else rng.randint(0, replicas)
    fleet_signals = []
    for i in range(count):
        silent = rng.random() < 0.01
        first_tokens = 40 * load
        fleet_signals.append(
            ReplicaSignals(
                pod=f"pod-{i}",
                ready=rng.random() > 0.03,
                started_at=NOW - 1e6 if rng.random() < 0.97 else None,
                requests_waiting=None if silent else rng.uniform(0, 8 * load),
                requests_running=None if silent else rng.uniform(0.5, 1.0) * 40 * min(load, 1.6),
                kv_cache_utilization=None if silent else rng.uniform(0, 0.9),
                ttft_window=None
                if silent
                else window([0, first_tokens * 0.5, first_tokens, first_tokens, first_tokens]),
            )
        )
    return fleet_signals


def test_invariants_over_random_fleets() -> None:
    rng = random.Random(20261125)
    config = PolicyConfig(
        min_replicas=2,
        max_replicas=12,
        targets=Targets(4, 40, 0.85, 10.0),
        scale_up=Behavior(30, max_step_replicas=3, period_seconds=60),
        scale_down=Behavior(120, max_step_percent=50),
    )
    history = DecisionHistory()
    replicas, now = 4, NOW
    directions: dict[Direction, int] = dict.fromkeys(Direction, 0)
    load = 1.0
    for step in range(2000):
        if step % 25 == 0:  # the load holds for a while, then jumps
            load = rng.choice([0.1, 0.5, 1.0, 1.5, 3.0])
        signals = random_signals(rng, replicas, load)
        decision = decide(now, replicas, signals, history, config)
        assert config.min_replicas <= decision.desired <= config.max_replicas
        assert decision.reason
        if decision.direction is Direction.HOLD:
            assert decision.desired == replicas
        if decision.desired < replicas:
            assert all(s.ready for s in signals) and len(signals) == replicas
            assert all(now - (s.started_at or 0) >= config.startup_grace_seconds for s in signals)
        if decision.desired > replicas:  # at most 3 added within any 60 s
            added = sum(e.to_replicas - e.from_replicas for e in history.scale_events if e.time > now - 60)
            assert decision.desired - (replicas - added) <= 3
        history = history.record(now, decision, config)
        replicas = decision.desired
        directions[decision.direction] += 1
        now += rng.choice([1.0, 5.0, 15.0, 60.0])
    assert all(count >= 20 for count in directions.values()), directions  # every branch was exercised
