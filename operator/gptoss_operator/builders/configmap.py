"""The ConfigMap `<name>-plan` that carries the serving plan to the pods (key `plan.json`)."""

from __future__ import annotations

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest, short_hash
from gptoss_runtime import contract


def plan_config_map_name(ctx: BuildContext) -> str:
    return ctx.child_name("-plan", limit=253)


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
        "data": {contract.PLAN_FILE_NAME: ctx.plan.to_json()},
    }
