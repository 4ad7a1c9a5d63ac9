"""The status of a GptOssDeployment, computed from what the operator observed (pure).

Inputs in, data out: the live children (server Deployment, its pods, the weights Job), the plan (or the
reason the spec is invalid), the GPU capacity, the previous status and the current time. No clock, no
API call, no kopf. The reconcile applies its part of the result (`status_ownership`) only when it changed.

Conditions follow the standard shape (metav1.Condition). `lastTransitionTime` moves only when a
condition's status flips, so recomputing an unchanged world yields an identical status and no write.
`status.autoscaling` and conditions of types this module does not own (the autoscaler's
CapacityLimited) are left as they are.

When the cluster's operator runs the CPU stand-in (GPTOSS_ENGINE_STAND_IN), the desired pod template says
so (`gptoss.io/engine`); status then says it plainly: `status.engine`, the condition EngineStandIn=True
(with a Normal Event once, when it turns True) and a sentence in the Ready message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gptoss_operator import diagnosis, names
from gptoss_operator.settings import ENGINE_STAND_IN_ENV
from gptoss_runtime import contract
from gptoss_runtime.plan import ServingPlan

# Conditions this module owns, in the order they are written.
OWNED_CONDITIONS: Final = (
    names.COND_READY,
    names.COND_PROGRESSING,
    names.COND_DEGRADED,
    names.COND_WEIGHTS_READY,
    names.COND_CAPACITY_AVAILABLE,
    names.COND_ENGINE_STAND_IN,
)
# Top-level status keys this module writes; anything else (autoscaling) belongs to someone else.
OWNED_KEYS: Final = (
    "phase",
    "observedGeneration",
    "replicas",
    "readyReplicas",
    "desiredReplicas",
    "selector",
    "gpusPerReplica",
    "gpus",
    "plan",
    "endpoints",
    "engine",
    "weights",
    "runtime",  # computed by the reconcile (upgrades.Recorded): what the pods were rendered with
    "conditions",
)
ENDPOINT_KEYS: Final = ("openai", "http", "grpc", "metrics")

# Container waiting reasons that mean a replica will not become ready without help.
STUCK_WAITING_REASONS: Final = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}
)
# Annotations on the pod template that identify the pods of the current spec.
GENERATION_ANNOTATIONS: Final = (names.ANNOTATION_GENERATION, names.ANNOTATION_PLAN_HASH)
GPU_ENGINE: Final = "trtllm"
# Ready reasons of a spec the operator will not act on (one Warning Event each, named by the reason).
REFUSAL_REASONS: Final = frozenset(
    {names.REASON_INVALID_SPEC, names.REASON_TOKEN_SECRET_NOT_MARKED, names.REASON_ENDPOINT_NOT_ALLOWED}
)
REASON_CPU_REFERENCE_ENGINE: Final = "CpuReferenceEngine"
REASON_DOWNLOADING_NEW_REVISION: Final = "DownloadingNewRevision"  # Progressing while a rollout is held
REASON_GPU_ENGINE: Final = "TensorRTLLM"
REASON_LOADED: Final = "Loaded"  # WeightsReady once a ready replica has loaded its weights (no Job)
REASON_PODS_NOT_READABLE: Final = "PodsNotReadable"

Json = dict[str, Any]


@dataclass(frozen=True)
class Capacity:
    """GPUs of the deployment's product, as the capacity check saw them."""

    product: str
    gpus_per_replica: int
    nodes: int  # schedulable nodes offering the product
    free_gpus: int  # allocatable minus requested, over those nodes
    replicas_that_fit: int  # further replicas that fit on free GPUs without splitting one across nodes
    scheduled_replicas: int  # this deployment's pods already bound to a node (they hold their GPUs)


@dataclass(frozen=True)
class Observation:
    """What the operator saw of one GptOssDeployment's children after applying them."""

    generation: int
    desired_replicas: int
    selector: str
    service_name: str | None
    template_annotations: Mapping[str, str]  # pod template annotations of the desired server Deployment
    deployment: Mapping[str, Any] | None  # the live server Deployment
    pods: Sequence[Mapping[str, Any]] = ()  # live server pods (all generations)
    weights_job: Mapping[str, Any] | None = None
    weights_from_existing_claim: bool = False
    capacity: Capacity | None = None
    cluster_wide_pod_reads: bool = True  # False: capacity is not counted by the cluster operator's choice
    # The cache PVC, the download Job's pods, the token Secret and the fetcher's progress (diagnosis).
    weights_facts: diagnosis.WeightsFacts = field(default_factory=diagnosis.WeightsFacts)
    # Why the server pod template is held at the live one (rollout.decide): new weights are downloading.
    rollout_held: str | None = None


@dataclass(frozen=True)
class ConditionValue:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class EventSpec:
    """An Event to emit because a condition flipped."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class _PodCounts:
    total: int
    current_ready: int
    scheduled: int
    stuck: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- conditions
def _condition(
    type_: str, value: ConditionValue, generation: int, previous: Mapping[str, Mapping[str, Any]], now: str
) -> Json:
    before = previous.get(type_)
    unchanged = before is not None and before.get("status") == value.status
    since = str(before.get("lastTransitionTime", now)) if unchanged and before is not None else now
    return {
        "type": type_,
        "status": value.status,
        "reason": value.reason,
        "message": value.message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def _conditions_by_type(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    conditions = (status or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conditions if isinstance(c, Mapping)}


def _merge_conditions(
    values: Mapping[str, ConditionValue], generation: int, previous_status: Mapping[str, Any] | None, now: str
) -> list[Json]:
    previous = _conditions_by_type(previous_status)
    ours = [_condition(t, values[t], generation, previous, now) for t in OWNED_CONDITIONS if t in values]
    kept_previous = [dict(previous[t]) for t in OWNED_CONDITIONS if t not in values and t in previous]
    foreign = [dict(c) for t, c in previous.items() if t not in OWNED_CONDITIONS]
    return ours + kept_previous + foreign


def condition_of(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of `type_` in `status`, or None."""
    return _conditions_by_type(status).get(type_)


# ------------------------------------------------------------------------------------------------- pods
def _is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_is_current(pod: Mapping[str, Any], template_annotations: Mapping[str, str]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return all(
        annotations.get(key) == template_annotations[key]
        for key in GENERATION_ANNOTATIONS
        if key in template_annotations
    )


def _stuck_reason(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING_REASONS:
            pod_name = (pod.get("metadata") or {}).get("name", "?")
            return f"pod {pod_name} container {container.get('name', '?')}: {waiting['reason']}"
    return None


def _updated_ready_bound(deployment: Mapping[str, Any] | None) -> int | None:
    """At most this many ready pods belong to the Deployment's newest template (old pods may all be ready)."""
    if deployment is None:
        return None
    status = deployment.get("status") or {}
    old = int(status.get("replicas") or 0) - int(status.get("updatedReplicas") or 0)
    return max(0, int(status.get("readyReplicas") or 0) - max(0, old))


def _count_pods(
    pods: Sequence[Mapping[str, Any]], template_annotations: Mapping[str, str], deployment: Mapping[str, Any] | None
) -> _PodCounts:
    live = [
        p
        for p in pods
        if not _is_terminating(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    current_ready = sum(1 for p in live if _pod_ready(p) and _pod_is_current(p, template_annotations))
    bound = _updated_ready_bound(deployment)
    if bound is not None:
        current_ready = min(current_ready, bound)
    scheduled = sum(1 for p in live if (p.get("spec") or {}).get("nodeName"))
    stuck = [reason for p in live if (reason := _stuck_reason(p)) is not None]
    return _PodCounts(total=len(live), current_ready=current_ready, scheduled=scheduled, stuck=stuck)


# ------------------------------------------------------------------------------------------ deployment
def _deployment_condition(deployment: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def _rollout_observed(deployment: Mapping[str, Any] | None) -> bool:
    """The Deployment controller has seen the Deployment's latest spec."""
    if deployment is None:
        return False
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    observed = int((deployment.get("status") or {}).get("observedGeneration") or 0)
    return observed >= generation


def _deployment_failure(deployment: Mapping[str, Any] | None) -> str | None:
    progressing = _deployment_condition(deployment, "Progressing")
    if progressing and progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return f"the server Deployment exceeded its progress deadline: {progressing.get('message', '')}".strip()
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return f"the server Deployment cannot create pods: {failure.get('message', '')}".strip()
    return None


# --------------------------------------------------------------------------------------------- weights
def weights_condition(obs: Observation, counts: _PodCounts | None = None) -> ConditionValue:
    """WeightsReady from the source, the download Job, or (without a Job) a ready current pod."""
    if obs.weights_from_existing_claim:
        return ConditionValue("True", "ExistingClaim", "weights are served from an existing PersistentVolumeClaim")
    job = obs.weights_job
    if job is not None:
        verdict = diagnosis.job_verdict(job, obs.weights_facts)  # what waits, and the fix (diagnosis)
        return ConditionValue(verdict.status, verdict.reason, verdict.message)
    if counts is not None and counts.current_ready > 0:
        # With a volume per replica, replicas added later (a scale-up) download their own copy meanwhile.
        fetching = len(diagnosis.fetching_pods(obs.pods, obs.weights_facts.fetch_container))
        more = f"; {fetching} more replica(s) still downloading their own copy" if fetching else ""
        return ConditionValue("True", REASON_LOADED, f"a ready replica has loaded the weights{more}")
    per_replica = diagnosis.per_replica_verdict(obs.weights_facts, obs.pods)  # a volume per replica
    if per_replica is not None:
        return ConditionValue(per_replica.status, per_replica.reason, per_replica.message)
    return ConditionValue("Unknown", "Pending", "weights are fetched when the first replica starts")


# -------------------------------------------------------------------------------------------- capacity
def _capacity_not_read(obs: Observation) -> ConditionValue:
    """CapacityAvailable when free GPUs cannot be counted: by the cluster operator's choice, or for lack of RBAC."""
    if not obs.cluster_wide_pod_reads:
        return ConditionValue(
            "Unknown",
            REASON_PODS_NOT_READABLE,
            "not checked: the operator reads only its own pods (setting GPTOSS_CLUSTER_WIDE_POD_READS=false, chart "
            "value rbac.clusterWidePodReads=false), so it cannot count free GPUs; scale-ups are not capped by capacity",
        )
    return ConditionValue(
        "Unknown",
        "NotChecked",
        "GPU capacity could not be read: the operator may not list nodes or pods in all namespaces (HTTP 403); "
        "grant it (chart value rbac.clusterWidePodReads=true) or turn the reads off on purpose "
        "(rbac.clusterWidePodReads=false)",
    )


def capacity_condition(obs: Observation) -> ConditionValue:
    cap = obs.capacity
    if cap is None:
        return _capacity_not_read(obs)
    missing = max(0, obs.desired_replicas - cap.scheduled_replicas)
    if missing <= cap.replicas_that_fit:
        return ConditionValue(
            "True",
            "SufficientGPUs",
            f"{cap.product}: every replica of {cap.gpus_per_replica} GPU(s) is scheduled or fits on free GPUs",
        )
    if cap.nodes == 0:
        return ConditionValue(
            "False",
            "NoMatchingNodes",
            f"no schedulable node offers GPU product {cap.product} (label {names.GPU_PRODUCT_LABEL}); "
            "fix spec.gpu.product or add such nodes",
        )
    return ConditionValue(
        "False",
        "InsufficientGPUs",
        f"spec.replicas={obs.desired_replicas} needs {missing} more replica(s) of {cap.gpus_per_replica} "
        f"{cap.product} GPU(s) on one node each, but only {cap.replicas_that_fit} fit on free GPUs "
        f"({cap.free_gpus} free); lower spec.replicas or spec.gpu.count, or add GPU nodes",
    )


# ------------------------------------------------------------------------------------------ endpoints
def endpoints(service: str | None, namespace: str, cluster_domain: str, openai: bool) -> dict[str, str | None]:
    """In-cluster addresses of the Service; None for what does not exist (left out of the status apply).

    With the gateway, Triton's HTTP and gRPC ports listen on the pods' loopback and the Service lacks them.
    """
    if service is None:
        return dict.fromkeys(ENDPOINT_KEYS)
    host = f"{service}.{namespace}.svc.{cluster_domain}"
    return {
        "openai": f"http://{host}:{contract.OPENAI_PORT}/v1" if openai else None,
        "http": None if openai else f"http://{host}:{contract.HTTP_PORT}",
        "grpc": None if openai else f"{host}:{contract.GRPC_PORT}",
        "metrics": f"http://{host}:{contract.METRICS_PORT}/metrics",
    }


# ---------------------------------------------------------------------------------------------- engine
def stand_in_engine(obs: Observation) -> str | None:
    """The engine standing in for TensorRT-LLM (from the desired pod template), or None on real GPUs."""
    engine = obs.template_annotations.get(names.ANNOTATION_ENGINE)
    return engine if engine and engine != GPU_ENGINE else None


def stand_in_message(engine: str) -> str:
    return (
        f"the CPU {engine} engine stands in for TensorRT-LLM (cluster setting {ENGINE_STAND_IN_ENV}={engine}); "
        "GPUs are simulated"
    )


def engine_condition(obs: Observation, previous: Mapping[str, Any] | None) -> ConditionValue | None:
    """EngineStandIn: True under the stand-in; False once it is turned off; absent on clusters that never had it."""
    engine = stand_in_engine(obs)
    if engine is not None:
        return ConditionValue("True", REASON_CPU_REFERENCE_ENGINE, stand_in_message(engine))
    if names.COND_ENGINE_STAND_IN in _conditions_by_type(previous):
        return ConditionValue("False", REASON_GPU_ENGINE, "TensorRT-LLM serves on the GPUs")
    return None


def engine_status(obs: Observation) -> Json:
    engine = stand_in_engine(obs)
    return {"name": engine or GPU_ENGINE, "standIn": engine is not None}


# ------------------------------------------------------------------------------------------------ status
def _with_engine_note(ready: ConditionValue, obs: Observation) -> ConditionValue:
    """Ready's message also says when a stand-in serves: `kubectl get` readers see Ready and nothing else."""
    engine = stand_in_engine(obs)
    if engine is None:
        return ready
    return ConditionValue(ready.status, ready.reason, f"{ready.message}; {stand_in_message(engine)}")


def _pods_waiting(obs: Observation, plan: ServingPlan) -> ConditionValue | None:
    """Why server pods cannot schedule or pull (GPU product absent vs GPUs short: from the capacity check)."""
    verdict = diagnosis.server_pods_waiting(
        obs.pods, gpu_product=plan.gpu_product, matching_nodes=None if obs.capacity is None else obs.capacity.nodes
    )
    return None if verdict is None else ConditionValue(verdict.status, verdict.reason, verdict.message)


def _ready_condition(
    obs: Observation,
    counts: _PodCounts,
    rollout_done: bool,
    capacity: ConditionValue,
    weights: ConditionValue,
    waiting: ConditionValue | None = None,
) -> ConditionValue:
    desired = obs.desired_replicas
    progress = f"{counts.current_ready}/{desired} replicas of generation {obs.generation} ready"
    if desired == 0:
        return ConditionValue("False", "ScaledToZero", "spec.replicas is 0; no replica serves")
    if rollout_done and counts.current_ready >= desired:
        return ConditionValue("True", "ReplicasReady", progress)
    if weights.reason == diagnosis.REASON_VOLUME_PENDING and counts.current_ready == 0:
        # Server pods mount the same claim: they are unschedulable for the volume's reason, said once.
        return ConditionValue("False", "WeightsNotReady", f"{progress}; {weights.message}")
    if waiting is not None and counts.current_ready == 0:
        return ConditionValue("False", waiting.reason, f"{progress}; {waiting.message}")
    if capacity.status == "False" and counts.current_ready == 0:
        return ConditionValue("False", "InsufficientCapacity", f"{progress}; {capacity.message}")
    if weights.status == "False" and counts.current_ready == 0:
        return ConditionValue("False", "WeightsNotReady", f"{progress}; {weights.message}")
    return ConditionValue("False", "ReplicasNotReady", progress)


def _degraded_condition(obs: Observation, counts: _PodCounts, weights: ConditionValue) -> ConditionValue:
    problems: list[str] = []
    if weights.reason == "DownloadFailed":
        problems.append(weights.message)
    failure = _deployment_failure(obs.deployment)
    if failure:
        problems.append(failure)
    problems.extend(counts.stuck[:3])
    if problems:
        return ConditionValue("True", "ReplicasFailing", "; ".join(problems))
    return ConditionValue("False", "AsExpected", "no failure observed")


def _progressing_condition(
    obs: Observation,
    counts: _PodCounts,
    rollout_done: bool,
    ready: ConditionValue,
    capacity: ConditionValue,
    waiting: ConditionValue | None = None,
) -> ConditionValue:
    if obs.rollout_held is not None:  # the old pods serve (Ready may be True) while the new revision downloads
        return ConditionValue("True", REASON_DOWNLOADING_NEW_REVISION, obs.rollout_held)
    if ready.status == "True" or ready.reason == "ScaledToZero":
        return ConditionValue("False", "RolloutComplete", ready.message)
    if waiting is not None:
        return ConditionValue("True", waiting.reason, waiting.message)
    if capacity.status == "False":
        return ConditionValue("True", "WaitingForCapacity", capacity.message)
    outage = diagnosis.rollout_outage(
        obs.deployment,
        desired_replicas=obs.desired_replicas,
        per_replica_download=obs.weights_facts.fetch_container is not None,
    )
    if outage is not None:
        return ConditionValue(
            "True", diagnosis.REASON_ROLLOUT_OUTAGE, f"rolling out generation {obs.generation}: {outage}"
        )
    if not rollout_done:
        return ConditionValue("True", "RollingOut", f"rolling out generation {obs.generation}")
    return ConditionValue("True", "ReplicasStarting", ready.message)


def _phase(ready: ConditionValue, degraded: ConditionValue, counts: _PodCounts) -> str:
    if degraded.status == "True":
        return names.PHASE_DEGRADED
    if ready.status == "True":
        return names.PHASE_READY
    if counts.scheduled == 0 and counts.current_ready == 0:
        return names.PHASE_PENDING
    return names.PHASE_PROGRESSING


def _weights_status(obs: Observation, weights: ConditionValue) -> Json | None:
    """`status.weights` (bytes done and total, rate, ETA) while a download runs; None (removed) otherwise."""
    if weights.reason not in (diagnosis.REASON_DOWNLOADING, REASON_LOADED):  # Loaded: replicas added later fetch
        return None
    return diagnosis.weights_status(obs.weights_facts, obs.pods)


def compute_status(
    obs: Observation,
    plan: ServingPlan,
    previous: Mapping[str, Any] | None,
    *,
    namespace: str,
    cluster_domain: str,
    now: str,
) -> Json:
    """The status of a valid deployment (every owned key; None values are left out of the status apply)."""
    counts = _count_pods(obs.pods, obs.template_annotations, obs.deployment)
    rollout_done = _rollout_observed(obs.deployment)
    weights = weights_condition(obs, counts)
    capacity = capacity_condition(obs)
    waiting = _pods_waiting(obs, plan)
    ready = _ready_condition(obs, counts, rollout_done, capacity, weights, waiting)
    degraded = _degraded_condition(obs, counts, weights)
    progressing = _progressing_condition(obs, counts, rollout_done, ready, capacity, waiting)
    values = {
        names.COND_READY: _with_engine_note(ready, obs),
        names.COND_PROGRESSING: progressing,
        names.COND_DEGRADED: degraded,
        names.COND_WEIGHTS_READY: weights,
        names.COND_CAPACITY_AVAILABLE: capacity,
    }
    stand_in = engine_condition(obs, previous)
    if stand_in is not None:
        values[names.COND_ENGINE_STAND_IN] = stand_in
    return {
        "phase": _phase(ready, degraded, counts),
        "observedGeneration": obs.generation,
        "replicas": counts.total,
        "readyReplicas": counts.current_ready,
        "desiredReplicas": obs.desired_replicas,
        "selector": obs.selector,
        "gpusPerReplica": plan.gpus_per_replica,
        "gpus": obs.desired_replicas * plan.gpus_per_replica,
        "plan": plan.model_dump(mode="json", by_alias=True),
        "endpoints": endpoints(obs.service_name, namespace, cluster_domain, plan.openai_endpoint),
        "engine": engine_status(obs),
        "weights": _weights_status(obs, weights),
        "conditions": _merge_conditions(values, obs.generation, previous, now),
    }


def invalid_spec_status(previous: Mapping[str, Any] | None, *, generation: int, message: str, now: str) -> Json:
    """Ready=False/InvalidSpec; children are untouched, so the observed fields keep their last values."""
    invalid = ConditionValue("False", names.REASON_INVALID_SPEC, message)
    values = {
        names.COND_READY: invalid,
        names.COND_PROGRESSING: ConditionValue("False", names.REASON_INVALID_SPEC, "fix the spec to continue"),
        names.COND_DEGRADED: ConditionValue("True", names.REASON_INVALID_SPEC, message),
    }
    return {
        "phase": names.PHASE_FAILED,
        "observedGeneration": generation,
        "conditions": _merge_conditions(values, generation, previous, now),
    }


def refused_weights_status(
    previous: Mapping[str, Any] | None, *, generation: int, reason: str, message: str, now: str
) -> Json:
    """WeightsReady=False and Ready=False with `reason` (the operator will not download as the spec asks:
    trust.Refusal); like an invalid spec, children are untouched and observed fields keep their last values."""
    refused = ConditionValue("False", reason, message)
    values = {
        names.COND_READY: refused,
        names.COND_PROGRESSING: ConditionValue("False", reason, "fix the weights source to continue"),
        names.COND_DEGRADED: ConditionValue("True", reason, message),
        names.COND_WEIGHTS_READY: refused,
    }
    return {
        "phase": names.PHASE_FAILED,
        "observedGeneration": generation,
        "conditions": _merge_conditions(values, generation, previous, now),
    }


# --------------------------------------------------------------------------------------------- events
def transition_events(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[EventSpec]:
    """Events for conditions that flipped between `previous` and `new` (none on an unchanged resync)."""
    before = _conditions_by_type(previous)
    after = _conditions_by_type(new)
    events: list[EventSpec] = []

    def flipped(type_: str) -> Mapping[str, Any] | None:
        cond = after.get(type_)
        old = before.get(type_)
        if cond is None:
            return None
        if old is not None and old.get("status") == cond.get("status") and old.get("reason") == cond.get("reason"):
            return None
        return cond

    ready = flipped(names.COND_READY)
    if ready is not None:
        if ready.get("reason") in REFUSAL_REASONS:
            events.append(EventSpec("Warning", str(ready.get("reason")), str(ready.get("message", ""))))
        elif ready.get("status") == "True":
            events.append(EventSpec("Normal", "Ready", str(ready.get("message", ""))))
    capacity = flipped(names.COND_CAPACITY_AVAILABLE)
    if capacity is not None and capacity.get("status") == "False":
        events.append(EventSpec("Warning", "InsufficientCapacity", str(capacity.get("message", ""))))
    elif (
        capacity is not None
        and capacity.get("status") == "True"
        and (before.get(names.COND_CAPACITY_AVAILABLE) or {}).get("status") == "False"
    ):
        events.append(EventSpec("Normal", "CapacityAvailable", str(capacity.get("message", ""))))
    stand_in = flipped(names.COND_ENGINE_STAND_IN)
    if stand_in is not None and stand_in.get("status") == "True":
        events.append(EventSpec("Normal", names.COND_ENGINE_STAND_IN, str(stand_in.get("message", ""))))
    update = flipped(names.COND_UPDATE_AVAILABLE)  # set by the reconcile (upgrades)
    if update is not None and update.get("status") == "True":
        events.append(EventSpec("Normal", names.COND_UPDATE_AVAILABLE, str(update.get("message", ""))))
    weights = flipped(names.COND_WEIGHTS_READY)
    if weights is not None and weights.get("reason") in diagnosis.WAITING_REASONS:  # once, when it starts to wait
        events.append(EventSpec("Warning", str(weights.get("reason")), str(weights.get("message", ""))))
    degraded = flipped(names.COND_DEGRADED)
    if degraded is not None and degraded.get("status") == "True" and degraded.get("reason") not in REFUSAL_REASONS:
        events.append(EventSpec("Warning", "Degraded", str(degraded.get("message", ""))))
    return events
