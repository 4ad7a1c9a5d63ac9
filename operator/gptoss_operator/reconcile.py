"""One idempotent reconcile of a GptOssDeployment: parse -> plan -> build -> apply -> prune -> observe -> status.

Called by every trigger (kopf create/update/resume, child events, the periodic resync) with the CR's
namespace and name; it reads the CR fresh so that decisions never rest on a stale body. Reconciles of
the same CR never overlap: a trigger that arrives while one runs marks it dirty and the running one goes
round once more (child events come in bursts during a rollout).

An invalid spec (pydantic or planner) writes Ready=False/InvalidSpec and an Event and touches no child.
Only metadata and spec are validated; the status (perhaps written by another operator version) is read
defensively (`parsing`). Every desired child is applied even when another one fails; the failures are
reported in the condition ChildrenApplied (child, HTTP code and the API's reason) and one Warning Event,
and then raised so that the caller retries with backoff.

With a `ClusterCache` the children, pods and GPU nodes come from watch-fed stores: a steady-state
reconcile makes no LIST (one GET of the CR, and writes only when something changed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gptoss_operator import builders, metrics, names, planner, status
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.autoscaling import capacity as capacity_math
from gptoss_operator.caches import CapacitySnapshot, ClusterCache
from gptoss_operator.kube import (
    GPTOSS,
    ApiError,
    ChildFailure,
    Kube,
    ResourceType,
    SyncResult,
    TransientApiError,
    resource_type,
)
from gptoss_operator.parsing import parse_deployment, read_status
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import ServingPlan

log = logging.getLogger(__name__)

Json = dict[str, Any]

MAX_CONFLICT_RETRIES = 3  # immediate re-runs of a triggered reconcile that lost a write race (HTTP 409)
# Optional kinds: listed and applied only where the cluster serves them.
OPTIONAL_APIS = {"PodMonitor": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1"}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did (for logs and tests)."""

    result: str  # metrics.RESULT_SUCCESS / RESULT_INVALID, or "gone"
    applied: tuple[tuple[str, str], ...] = ()
    pruned: tuple[tuple[str, str], ...] = ()
    status_patched: bool = False


def validation_message(error: ValidationError) -> str:
    """A pydantic error as `spec.<field>: <problem>` lines (the first few)."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or str(error)


def _pod_labels_selector(deployment: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((deployment or {}).get("spec") or {}).get("selector", {}).get("matchLabels") or {})


def _find(children: Iterable[Mapping[str, Any]], kind: str, component: str | None = None) -> Mapping[str, Any] | None:
    for child in children:
        if child.get("kind") != kind:
            continue
        labels = (child.get("metadata") or {}).get("labels") or {}
        if component is None or labels.get(names.LABEL_COMPONENT) == component:
            return child
    return None


def _has_labels(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _name(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else str((obj.get("metadata") or {}).get("name"))


def _condition_reason(failures: Sequence[ChildFailure]) -> str:
    """The API's reason of the first failure as a condition reason (CamelCase, no spaces), else ApplyFailed."""
    reason = "".join(ch for ch in failures[0].error.reason if ch.isalnum())
    return reason if reason[:1].isalpha() else "ApplyFailed"


def children_condition(failures: Sequence[ChildFailure]) -> status.ConditionValue:
    """ChildrenApplied: True when every child is as desired, else which ones the API server refused and why."""
    if not failures:
        return status.ConditionValue("True", "AllApplied", "every child is applied as desired")
    return status.ConditionValue("False", _condition_reason(failures), "; ".join(f.describe() for f in failures)[:1024])


def with_condition(
    new_status: Json, previous: Mapping[str, Any], type_: str, value: status.ConditionValue, generation: int, now: str
) -> Json:
    """`new_status` with condition `type_` set (its lastTransitionTime kept while its status holds)."""
    before = status.condition_of(previous, type_)
    unchanged = before is not None and before.get("status") == value.status
    condition = {
        "type": type_,
        "status": value.status,
        "reason": value.reason,
        "message": value.message,
        "observedGeneration": generation,
        "lastTransitionTime": str(before.get("lastTransitionTime", now)) if unchanged and before else now,
    }
    others = [c for c in new_status.get("conditions") or [] if c.get("type") != type_]
    return {**new_status, "conditions": [*others, condition]}


def children_event(previous: Mapping[str, Any], new_status: Mapping[str, Any]) -> status.EventSpec | None:
    """One Warning when the set of refused children (or the reason) changes; none while it stays the same."""
    after = status.condition_of(new_status, names.COND_CHILDREN_APPLIED) or {}
    before = status.condition_of(previous, names.COND_CHILDREN_APPLIED) or {}
    if after.get("status") != "False":
        return None
    if (before.get("status"), before.get("reason"), before.get("message")) == (
        "False",
        after.get("reason"),
        after.get("message"),
    ):
        return None
    return status.EventSpec("Warning", "ChildrenNotApplied", str(after.get("message", "")))


def first_failure(failures: Sequence[ChildFailure]) -> ApiError:
    """The error to raise for a partly applied CR: a transient one first (it asks for a sooner retry)."""
    transient = [f.error for f in failures if isinstance(f.error, TransientApiError)]
    return transient[0] if transient else failures[0].error


class Reconciler:
    """Reconciles GptOssDeployments through a `Kube` client."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        *,
        now: Callable[[], str] = utc_now,
        cache: ClusterCache | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self._now = now
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._dirty: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------ triggers
    def reconcile(self, namespace: str, name: str) -> Outcome:
        """Reconcile now, waiting for a running reconcile of the same CR; errors propagate."""
        lock = self._lock_for((namespace, name))
        with lock:
            outcome = self._reconcile_once(namespace, name)
        self._drain((namespace, name))
        return outcome

    def trigger(self, namespace: str, name: str) -> None:
        """Reconcile soon: now if idle, else after the running one (errors are logged, not raised)."""
        key = (namespace, name)
        with self._guard:
            self._dirty.add(key)
        self._drain(key)

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _drain(self, key: tuple[str, str]) -> None:
        lock = self._lock_for(key)
        attempts = 0
        while True:
            if not lock.acquire(blocking=False):
                return  # the holder drains after it finishes
            try:
                with self._guard:
                    if key not in self._dirty:
                        return
                    self._dirty.discard(key)
                try:
                    self._reconcile_once(*key)
                except TransientApiError as error:
                    if error.code == 409 and attempts < MAX_CONFLICT_RETRIES:  # lost a race: go again now
                        attempts += 1
                        with self._guard:
                            self._dirty.add(key)
                    else:
                        log.warning("reconcile of %s/%s failed (the resync retries): %s", key[0], key[1], error)
                except Exception as error:  # a trigger has no caller to tell; the resync retries
                    log.warning("reconcile of %s/%s failed (the resync retries): %s", key[0], key[1], error)
            finally:
                lock.release()

    # ----------------------------------------------------------------------------- reconcile
    def _reconcile_once(self, namespace: str, name: str) -> Outcome:
        started = time.monotonic()
        body = self.kube.get(GPTOSS, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            metrics.forget_deployment(namespace, name)
            return Outcome("gone")  # the garbage collector removes the children through ownerReferences
        try:
            outcome = self._reconcile_body(body)
        except Exception:
            metrics.observe_reconcile(metrics.RESULT_ERROR, time.monotonic() - started, namespace=namespace, name=name)
            raise
        metrics.observe_reconcile(outcome.result, time.monotonic() - started, namespace=namespace, name=name)
        return outcome

    def _reconcile_body(self, body: Json) -> Outcome:
        previous = read_status(body)
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        try:
            cr = parse_deployment(body)
            plan = planner.plan(cr.spec, self.settings)
        except ValidationError as error:
            return self._invalid(body, previous, generation, validation_message(error))
        except planner.PlanError as error:
            return self._invalid(body, previous, generation, f"spec.{error.field}: {error.message}")

        features = builders.ClusterFeatures(pod_monitor=self._serves("PodMonitor"), keda=self._serves("ScaledObject"))
        desired = builders.build_children(cr, plan, self.settings, features)
        synced = self._sync(body, cr, desired, features)
        observation = self._observe(cr, plan, desired, list(synced.live.values()))
        now = self._now()
        new_status = status.compute_status(
            observation,
            plan,
            previous,
            namespace=cr.namespace,
            cluster_domain=self.settings.cluster_domain,
            now=now,
        )
        children = children_condition(synced.failed)
        new_status = with_condition(new_status, previous, names.COND_CHILDREN_APPLIED, children, generation, now)
        patched = self._write_status(body, previous, new_status)
        self._export(cr, plan, new_status)
        if synced.failed:
            log.warning("%s/%s: %s", cr.namespace, cr.name, children.message)
            raise first_failure(synced.failed)  # after the status says it: the caller retries with backoff
        if synced.applied or synced.pruned:
            log.info(
                "reconciled %s/%s: applied %s, pruned %s",
                cr.namespace,
                cr.name,
                [f"{k}/{n}" for k, n in synced.applied],
                [f"{k}/{n}" for k, n in synced.pruned],
            )
        return Outcome(metrics.RESULT_SUCCESS, synced.applied, synced.pruned, patched)

    def _invalid(self, body: Json, previous: Mapping[str, Any], generation: int, message: str) -> Outcome:
        meta = body.get("metadata") or {}
        log.warning("invalid spec of %s/%s: %s", meta.get("namespace"), meta.get("name"), message)
        new_status = status.invalid_spec_status(previous, generation=generation, message=message, now=self._now())
        patched = self._write_status(body, previous, new_status)
        metrics.set_deployment_state(
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            model=str((body.get("spec") or {}).get("model") or "unknown"),
            phase=names.PHASE_FAILED,
            desired_replicas=0,
            ready_replicas=0,
            gpus=0,
            capacity_limited=False,
            weights_ready=False,
        )
        return Outcome(metrics.RESULT_INVALID, status_patched=patched)

    # ------------------------------------------------------------------------------ pieces
    def _serves(self, kind: str) -> bool:
        try:
            return self.kube.has_api(OPTIONAL_APIS[kind], kind)
        except ApiError as error:
            if error.code in (403, 404):
                return False
            raise

    def _sync(
        self, body: Json, cr: GptOssDeployment, desired: Sequence[Json], features: builders.ClusterFeatures
    ) -> SyncResult:
        managed = self._managed_kinds(features)
        if self.cache is None or not self.cache.synced:
            return self.kube.sync_children(body, desired, managed)
        live = self.cache.children_of(cr.namespace, cr.name)
        uncached = [r for r in managed if r.kind not in self.cache.children]  # e.g. a CRD installed later
        if uncached:
            live |= self.kube.list_children(cr.namespace, cr.name, uncached)
        return self.kube.sync_children(body, desired, managed, live)

    @staticmethod
    def _managed_kinds(features: builders.ClusterFeatures) -> list[ResourceType]:
        """Kinds to list for pruning; optional kinds only where the cluster serves them."""
        return [
            resource_type(kind)
            for kind in builders.MANAGED_KINDS
            if kind.feature is None or getattr(features, kind.feature, False)
        ]

    def _observe(
        self, cr: GptOssDeployment, plan: ServingPlan, desired: Sequence[Json], live: Sequence[Json]
    ) -> status.Observation:
        wanted_deployment = _find(desired, "Deployment", names.COMPONENT_SERVER)
        deployment = _find(live, "Deployment", names.COMPONENT_SERVER)
        pod_labels = _pod_labels_selector(wanted_deployment)
        pods, cap = self._pods_and_capacity(cr, plan, wanted_deployment, pod_labels)
        template = ((wanted_deployment or {}).get("spec") or {}).get("template") or {}
        template_annotations = (template.get("metadata") or {}).get("annotations") or {}
        return status.Observation(
            generation=cr.metadata.generation,
            desired_replicas=cr.spec.replicas,
            selector=",".join(f"{k}={v}" for k, v in sorted(pod_labels.items())),
            service_name=_name(_find(desired, "Service")),
            template_annotations=template_annotations,
            deployment=deployment,
            pods=pods,
            weights_job=_find(live, "Job"),
            weights_from_existing_claim=cr.spec.weights.existing_claim is not None,
            capacity=cap,
        )

    def _pods_and_capacity(
        self,
        cr: GptOssDeployment,
        plan: ServingPlan,
        deployment: Mapping[str, Any] | None,
        pod_labels: Mapping[str, str],
    ) -> tuple[list[Json], status.Capacity | None]:
        """Own server pods, and the GPU capacity (None when nodes or all pods cannot be read)."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(pod_labels.items()))
        try:
            snapshot = self.capacity_snapshot()
        except ApiError as error:
            if error.code != 403:
                raise
            log.warning("cannot read nodes or pods cluster-wide (%s); CapacityAvailable stays Unknown", error)
            return self.kube.active_pods(cr.namespace, selector), None
        nodes, all_pods = snapshot.nodes, snapshot.pods
        pods = [
            p
            for p in all_pods
            if _has_labels(p, pod_labels) and (p.get("metadata") or {}).get("namespace") == cr.namespace
        ]
        pod_spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        placement = capacity_math.Placement.from_pod_spec(
            pod_spec, gpus_per_replica=plan.gpus_per_replica, own_pod_labels=pod_labels, gpu_product=plan.gpu_product
        )
        fit = capacity_math.replicas_that_fit(nodes, all_pods, placement)
        cap = status.Capacity(
            product=plan.gpu_product,
            gpus_per_replica=plan.gpus_per_replica,
            nodes=len(fit.nodes),
            free_gpus=fit.free_gpus,
            replicas_that_fit=fit.additional,
            scheduled_replicas=fit.placed,
        )
        return pods, cap

    def capacity_snapshot(self) -> CapacitySnapshot:
        """GPU nodes and active pods: from the caches when they are synced, else listed (two LISTs)."""
        if self.cache is not None and self.cache.synced:
            return self.cache.snapshot()
        return CapacitySnapshot(self.kube.nodes(), self.kube.active_pods())

    def _write_status(self, body: Json, previous: Mapping[str, Any], new_status: Json) -> bool:
        patch = status.status_patch(previous, new_status)
        if patch is None:
            return False
        meta = body.get("metadata") or {}
        self.kube.patch_status(str(meta["namespace"]), str(meta["name"]), patch, meta.get("resourceVersion"))
        events = status.transition_events(previous, new_status)
        children = children_event(previous, new_status)
        for event in [*events, *([children] if children else [])]:
            self.kube.emit_event(body, event.type, event.reason, event.message)
        return True

    def _export(self, cr: GptOssDeployment, plan: ServingPlan, new_status: Mapping[str, Any]) -> None:
        capacity_cond = status.condition_of(new_status, names.COND_CAPACITY_AVAILABLE) or {}
        limited_cond = status.condition_of(new_status, names.COND_CAPACITY_LIMITED) or {}  # the autoscaler's
        weights_cond = status.condition_of(new_status, names.COND_WEIGHTS_READY) or {}
        metrics.set_deployment_state(
            namespace=cr.namespace,
            name=cr.name,
            model=cr.spec.model,
            phase=str(new_status.get("phase")),
            desired_replicas=cr.spec.replicas,
            ready_replicas=int(new_status.get("readyReplicas") or 0),
            gpus=int(new_status.get("replicas") or 0) * plan.gpus_per_replica,
            capacity_limited=capacity_cond.get("status") == "False" or limited_cond.get("status") == "True",
            weights_ready=weights_cond.get("status") == "True",
            # The TTFT alert compares against the deployment's own target (2 s without one).
            time_to_first_token_target_seconds=cr.spec.autoscaling.targets.time_to_first_token_seconds,
        )
