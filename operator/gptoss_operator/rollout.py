"""Rollouts without outages: what to apply while new weights download and which old plans to keep (pure).

Inputs in, data out: the desired children the builders made, the live children (watch-fed cache or one
list) and the live server pods. No clock, no API call, no kopf.

Two decisions, both taken before anything is applied:

- **Download before roll.** When the desired server pod template needs weights that are not downloaded
  yet (its weights Job, named by repository, revision and endpoint, has not completed) while the live
  Deployment has pods that serve, the Deployment keeps its live pod template: the old pods go on serving
  the old revision from their own folder of the cache while the Job fills the new one. Everything else of
  the Deployment (replicas, strategy, deadlines) follows the spec. Once the Job completes, the template
  switches and the pods roll onto weights that are already there, so with `maxSurge: 0` no replica waits
  in `Init` for a download. Nothing to hold for: the first rollout (no live Deployment), a Deployment with
  no available pod (nothing serves that a hold would protect, and the old template may be the broken one
  the user is replacing), and changes that need no new weights.
- **Plan ConfigMaps are kept until the rollout is over.** Plan ConfigMaps are immutable and named by
  content (`builders.configmap`), so every plan change leaves the previous one behind. An old one is kept
  (returned among the children, exactly as it lives, so applying it changes nothing) while the live
  Deployment's template mounts it, while a live pod mounts it, or while the Deployment has not finished
  rolling out the desired template (its controller has not observed the latest spec, or pods of an older
  ReplicaSet remain). Afterwards it is pruned like any undesired child.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gptoss_operator import names

Json = dict[str, Any]

# Metadata of a live ConfigMap that the builder also wrote: what a kept copy carries (nothing the server or
# other writers added, so the kept copy's content is what the builder built and applying it is a no-op).
_KEPT_METADATA: Final = ("name", "namespace", "labels", "ownerReferences")


@dataclass(frozen=True)
class RolloutDecision:
    """The children to apply, and why the pod template is held (None when it is not)."""

    children: list[Json]
    held: str | None = None  # a sentence for status (Progressing=True, status.REASON_DOWNLOADING_NEW_REVISION)
    kept_plans: tuple[str, ...] = ()  # names of older plan ConfigMaps kept for the pods that still mount them


def decide(
    desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]] = ()
) -> RolloutDecision:
    """The children to apply this reconcile (see the module's docstring)."""
    children = [dict(child) for child in desired]
    live_deployment = server_deployment(live)
    held = _hold(children, live, live_deployment)
    kept = _kept_plan_config_maps(children, live, live_deployment, pods)
    return RolloutDecision(
        [*children, *(_kept_copy(cm) for cm in kept)],
        held,
        tuple(sorted(_name(cm) for cm in kept)),
    )


def stale_plan_config_maps(desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of live plan ConfigMaps the builders no longer produce (the reconcile reads pods only then)."""
    wanted = {_name(child) for child in desired if child.get("kind") == "ConfigMap"}
    return sorted(_name(cm) for cm in live if _is_plan_config_map(cm) and _name(cm) not in wanted)


# ------------------------------------------------------------------------------ download before roll
def _hold(
    children: list[Json], live: Sequence[Mapping[str, Any]], live_deployment: Mapping[str, Any] | None
) -> str | None:
    """Replace the desired Deployment's pod template by the live one while new weights download."""
    index = next((i for i, child in enumerate(children) if _is_server_deployment(child)), None)
    if index is None or live_deployment is None or not _serves(live_deployment):
        return None
    desired = children[index]
    if template_hash(desired) == template_hash(live_deployment):
        return None
    job = pending_weights_job(children, live)
    if job is None:
        return None
    live_template = copy.deepcopy(((live_deployment.get("spec") or {}).get("template")) or {})
    (live_template.get("metadata") or {}).pop("creationTimestamp", None)
    children[index] = {**desired, "spec": {**desired["spec"], "template": live_template}}
    return (
        f"downloading the weights the new pod template needs (Job {job}); the current pods keep serving "
        "and roll once the download has completed"
    )


def pending_weights_job(children: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> str | None:
    """The name of the desired weights Job when its download has not completed (None: no Job, or done)."""
    job = next((c for c in children if c.get("kind") == "Job" and _component(c) == names.COMPONENT_WEIGHTS), None)
    if job is None:
        return None
    name = _name(job)
    found = next((j for j in live if j.get("kind") == "Job" and _name(j) == name), None)
    return None if found is not None and job_complete(found) else name


def job_complete(job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    complete = any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or [])
    return complete or int(status.get("succeeded") or 0) > 0


def _serves(deployment: Mapping[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0) > 0


# ------------------------------------------------------------------------------------ plan ConfigMaps
def _kept_plan_config_maps(
    children: Sequence[Mapping[str, Any]],
    live: Sequence[Mapping[str, Any]],
    live_deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    stale = set(stale_plan_config_maps(children, live))
    if not stale:
        return []
    desired_deployment = server_deployment(children)
    if desired_deployment is not None and not rollout_finished(live_deployment, desired_deployment):
        needed = stale
    else:
        needed = {name for name in stale if name in _mounted_config_maps(live_deployment, pods)}
    return [cm for cm in live if _is_plan_config_map(cm) and _name(cm) in needed]


def rollout_finished(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """The live Deployment runs the desired template everywhere: observed by its controller, no older pods."""
    if live is None or template_hash(live) != template_hash(desired):
        return False
    meta, spec, status = live.get("metadata") or {}, live.get("spec") or {}, live.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(status.get("updatedReplicas") or 0)
    return updated >= replicas and int(status.get("replicas") or 0) <= updated


def _mounted_config_maps(deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> set[str]:
    """ConfigMaps the live Deployment's template or a live (not finished, not terminating) pod mounts."""
    specs = [(((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}]
    for pod in pods:
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if not finished and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            specs.append(pod.get("spec") or {})
    return {
        str(volume["configMap"].get("name"))
        for spec in specs
        for volume in spec.get("volumes") or []
        if isinstance(volume.get("configMap"), Mapping)
    }


def _kept_copy(config_map: Mapping[str, Any]) -> Json:
    """A live plan ConfigMap as the builder made it (the applied content, nothing the server added)."""
    meta = config_map.get("metadata") or {}
    kept_meta: Json = {key: copy.deepcopy(meta[key]) for key in _KEPT_METADATA if key in meta}
    plan_hash = (meta.get("annotations") or {}).get(names.ANNOTATION_PLAN_HASH)
    kept_meta["annotations"] = {names.ANNOTATION_PLAN_HASH: plan_hash}
    kept: Json = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": kept_meta}
    if config_map.get("immutable") is not None:
        kept["immutable"] = config_map["immutable"]
    kept["data"] = dict(config_map.get("data") or {})
    return kept


# ------------------------------------------------------------------------------------------- helpers
def server_deployment(children: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((child for child in children if _is_server_deployment(child)), None)


def template_hash(deployment: Mapping[str, Any]) -> str | None:
    template = (deployment.get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_TEMPLATE_HASH)
    return None if value is None else str(value)


def _is_server_deployment(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Deployment" and _component(obj) == names.COMPONENT_SERVER


def _is_plan_config_map(obj: Mapping[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return obj.get("kind") == "ConfigMap" and names.ANNOTATION_PLAN_HASH in annotations


def _component(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_COMPONENT)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))
