"""The PodDisruptionBudget `<name>`: only with more than one replica (one replica cannot stay available
through a drain anyway, and a budget of 0 disruptions would block node maintenance)."""

from __future__ import annotations

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest


def build_pod_disruption_budget(ctx: BuildContext) -> Manifest | None:
    budget = ctx.cr.spec.disruption_budget
    if not budget.enabled or ctx.cr.spec.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": ctx.metadata(ctx.child_name(), names.COMPONENT_SERVER),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": ctx.selector()},
            # Pods still loading weights are not serving: let a drain evict them without waiting.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
