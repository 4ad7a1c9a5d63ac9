"""The spec's `autoscaling` section as the policy's `PolicyConfig` (pure).

The policy does not import the API models, so that its tables stay independent of the CRD's shape; this
adapter is the one place that knows both.
"""

from __future__ import annotations

from gptoss_operator.api import AutoscalingSpec, ScalingBehavior

from .policy import Behavior, PolicyConfig, Targets, default_running_target


def policy_config(spec: AutoscalingSpec, *, max_batch_size: int) -> PolicyConfig:
    """The policy's configuration for a deployment whose replicas schedule at most `max_batch_size` sequences.

    Without a `requestsRunningPerReplica` target the running signal still counts, at
    `default_running_target(max_batch_size)`: it is the signal that sees load before requests queue.
    Raises ValueError naming the field for values the policy cannot use.
    """
    targets = spec.targets
    running = targets.requests_running_per_replica
    return PolicyConfig(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        targets=Targets(
            requests_waiting_per_replica=targets.requests_waiting_per_replica,
            requests_running_per_replica=running if running is not None else default_running_target(max_batch_size),
            kv_cache_utilization=targets.kv_cache_utilization,
            time_to_first_token_seconds=targets.time_to_first_token_seconds,
        ),
        scale_up=_behavior(spec.scale_up, spec.tolerance),
        scale_down=_behavior(spec.scale_down, spec.tolerance),
    )


def _behavior(behavior: ScalingBehavior, tolerance: float) -> Behavior:
    return Behavior(
        stabilization_window_seconds=float(behavior.stabilization_window_seconds),
        max_step_replicas=behavior.max_step_replicas,
        tolerance=tolerance,
    )
