"""The spec's autoscaling section mapped to the policy's configuration."""

from __future__ import annotations

import pytest

from gptoss_operator.api import AutoscalingSpec
from gptoss_operator.autoscaling.config import policy_config
from gptoss_operator.autoscaling.policy import Behavior, PolicyConfig, Targets, default_running_target


def test_defaults_add_the_running_target_from_the_batch_limit() -> None:
    config = policy_config(AutoscalingSpec(enabled=True), max_batch_size=64)
    spec = AutoscalingSpec()
    assert config == PolicyConfig(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        targets=Targets(
            requests_waiting_per_replica=spec.targets.requests_waiting_per_replica,
            requests_running_per_replica=default_running_target(64),
            kv_cache_utilization=spec.targets.kv_cache_utilization,
            time_to_first_token_seconds=None,
        ),
        scale_up=Behavior(
            stabilization_window_seconds=spec.scale_up.stabilization_window_seconds,
            max_step_replicas=spec.scale_up.max_step_replicas,
            tolerance=spec.tolerance,
        ),
        scale_down=Behavior(
            stabilization_window_seconds=spec.scale_down.stabilization_window_seconds,
            max_step_replicas=spec.scale_down.max_step_replicas,
            tolerance=spec.tolerance,
        ),
    )


def test_spec_values_are_carried_over() -> None:
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 9,
            "tolerance": 0.2,
            "targets": {"requestsRunningPerReplica": 30, "timeToFirstTokenSeconds": 1.5},
            "scaleUp": {"stabilizationWindowSeconds": 15, "maxStepReplicas": 3},
            "scaleDown": {"stabilizationWindowSeconds": 600, "maxStepReplicas": 2},
        }
    )
    config = policy_config(spec, max_batch_size=64)
    assert (config.min_replicas, config.max_replicas) == (2, 9)
    assert config.targets.requests_running_per_replica == 30
    assert config.targets.time_to_first_token_seconds == 1.5
    assert config.scale_up == Behavior(15, max_step_replicas=3, tolerance=0.2)
    assert config.scale_down == Behavior(600, max_step_replicas=2, tolerance=0.2)


def test_a_target_the_policy_cannot_use_names_the_field() -> None:
    spec = AutoscalingSpec.model_validate({"targets": {"requestsWaitingPerReplica": 0}})
    with pytest.raises(ValueError, match=r"autoscaling\.targets\.requestsWaitingPerReplica: must be > 0"):
        policy_config(spec, max_batch_size=64)
