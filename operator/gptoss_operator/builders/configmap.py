"""The ConfigMap `<name>-plan-<hash>` that carries the serving plan to the pods (key `plan.json`).

Named by its content and immutable: a changed plan is a new ConfigMap, never an edit of the one the
running pods mount. A pod of the old template that restarts mid-rollout (or while the rollout is held for
a download) reads the plan it was built for, not a newer one its runtime may not understand. The
reconcile keeps the older plan ConfigMaps while a pod or the live Deployment still needs them and prunes
them once the rollout has finished (`gptoss_operator.rollout`). Immutable ConfigMaps also spare the
kubelet its watch of each one.
"""

from __future__ import annotations

from typing import Final

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest, short_hash
from gptoss_runtime import contract

PLAN_NAME_HASH_LENGTH: Final = 10


def plan_config_map_name(ctx: BuildContext) -> str:
    return ctx.child_name(f"-plan-{plan_hash(ctx)[:PLAN_NAME_HASH_LENGTH]}", limit=253)


def plan_hash(ctx: BuildContext) -> str:
    """A short hash of the plan file: it changes exactly when the pods must be restarted to see a new plan."""
    return short_hash(ctx.plan.to_json(), length=16)


def build_plan_config_map(ctx: BuildContext) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ctx.metadata(
            plan_config_map_name(ctx), names.COMPONENT_SERVER, {names.ANNOTATION_PLAN_HASH: plan_hash(ctx)}
        ),
        "immutable": True,
        "data": {contract.PLAN_FILE_NAME: ctx.plan.to_json()},
    }
