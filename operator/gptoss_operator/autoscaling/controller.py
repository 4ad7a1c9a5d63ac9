"""One evaluation of the operator's autoscaler over every GptOssDeployment it watches (thin orchestration).

Per deployment with `autoscaling.enabled`:

- mode operator: read the server pods (pods being deleted left out; a ready pod's `started_at` is its Ready
  condition's lastTransitionTime), scrape the ready ones concurrently, `policy.decide`, cap the result by
  `capacity.replicas_that_fit` over the cluster's nodes and pods, record status.autoscaling (the decision
  history rides along in status, so a restarted operator resumes its stabilization windows),
  CapacityLimited and ScalingActive, then - only once that record is written - set the replicas through
  the CR's scale subresource when the capped value differs; Events and metrics;
- modes hpa and keda: the HPA or ScaledObject (built by the reconcile) acts; record the mode and
  ScalingActive (False/KedaNotInstalled where KEDA's CRDs are missing);
- disabled: remove what the autoscaler wrote before.

Status is written by server-side apply as `names.FIELD_MANAGER_AUTOSCALER`, stating only the fields the
autoscaler owns (status_ownership); the reconcile's fields and conditions belong to another manager.
Every API call goes through `AutoscalerApi` (the `kube` module in production, fakes in tests), run in a
thread because the Kubernetes client blocks. Pure parts live in policy, capacity, signals and record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

from pydantic import ValidationError

from gptoss_operator import builders, capabilities, metrics, names, planner, status_ownership
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders.context import child_name
from gptoss_operator.kube import ApiError
from gptoss_operator.parsing import parse_deployment, read_status
from gptoss_operator.settings import OperatorSettings
from gptoss_operator.status import ConditionValue
from gptoss_runtime.contract import METRICS_PORT
from gptoss_runtime.plan import ServingPlan

from . import record
from .capacity import Cap, Fit, Placement, cap, gpus_in_use, replicas_that_fit
from .config import policy_config
from .policy import Decision, DecisionHistory, Direction, decide
from .scrape import ScrapeError, url_host
from .signals import MetricsSample, ReplicaSignals, replica_signals

log = logging.getLogger(__name__)

Json = dict[str, Any]
Scrape = Callable[[str], Awaitable[MetricsSample]]  # metrics URL -> sample; raises ScrapeError


class AutoscalerApi(Protocol):
    """The API calls the autoscaler makes (blocking; `kube.Kube` plus two small adapters)."""

    def list_deployments(self, namespaces: Sequence[str]) -> list[Json]: ...

    def nodes(self) -> list[Json]: ...

    def active_pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[Json]: ...

    def serves_keda(self) -> bool: ...

    def apply_status(self, namespace: str, name: str, status_fields: Mapping[str, Any], field_manager: str) -> Json: ...

    def scale(self, namespace: str, name: str, replicas: int) -> Json: ...

    def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class RecordNotWritten(Exception):  # noqa: N818 - reads as what happened
    """The autoscaler could not record its decision in status; it then does not act on it."""


@dataclass(frozen=True)
class ClusterSnapshot:
    """Nodes and active pods of the whole cluster, read once per evaluation round."""

    nodes: list[Json]
    pods: list[Json]

    @cached_property
    def gpus_used(self) -> dict[str, int]:
        """GPUs held per node, counted once per round (not once per deployment)."""
        return gpus_in_use(self.pods)


@dataclass(frozen=True)
class Outcome:
    """What one evaluation did for one deployment (for logs and tests)."""

    namespace: str
    name: str
    action: str  # operator, hpa, keda, disabled, skipped
    decision: Decision | None = None
    applied: int | None = None
    capped: bool = False
    status_written: bool = False
    note: str = ""


@dataclass
class _Memory:
    """What the autoscaler remembers of one deployment between evaluations."""

    history: DecisionHistory
    samples: dict[str, MetricsSample] = field(default_factory=dict)  # by pod uid (TTFT windows)


# ------------------------------------------------------------------------------------------ pods
def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


@dataclass(frozen=True)
class PodReadiness:
    ready: bool
    since: float | None = None  # the Ready condition's lastTransitionTime (Unix seconds)


def readiness(pod: Mapping[str, Any]) -> PodReadiness:
    """Whether the pod is Running and Ready, and since when."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return PodReadiness(False)
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return PodReadiness(True, record.unix_seconds(condition.get("lastTransitionTime")))
    return PodReadiness(False)


def own_pods(pods: Sequence[Json], namespace: str, labels: Mapping[str, str]) -> list[Json]:
    """The deployment's server pods that exist and are not being deleted (they would block scale-down)."""
    return [
        p
        for p in pods
        if _meta(p).get("namespace") == namespace
        and all((_meta(p).get("labels") or {}).get(k) == v for k, v in labels.items())
        and not _meta(p).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def metrics_url(template: str, pod: Mapping[str, Any]) -> str:
    """The pod's metrics address from the operator's template; ScrapeError when the pod has no IP."""
    pod_ip = (pod.get("status") or {}).get("podIP")
    if not pod_ip:
        raise ScrapeError(f"pod {_meta(pod).get('name')} has no IP yet")
    return template.format(
        pod_ip=url_host(str(pod_ip)),
        port=METRICS_PORT,
        pod_name=_meta(pod).get("name"),
        namespace=_meta(pod).get("namespace"),
    )


# ---------------------------------------------------------------------------------------- the loop
class Autoscaler:
    """Evaluates every watched GptOssDeployment once per `evaluate_all()` call."""

    def __init__(
        self,
        api: AutoscalerApi,
        settings: OperatorSettings,
        scrape: Scrape,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.settings = settings
        self._scrape = scrape
        self._clock = clock
        self._memory: dict[str, _Memory] = {}
        self._failing: set[str] = set()  # pods whose last scrape failed (their next failure logs at debug)

    async def evaluate_all(self) -> list[Outcome]:
        """One round: every deployment evaluated concurrently; a failure of one is logged, not raised."""
        bodies = await asyncio.to_thread(self.api.list_deployments, self.settings.namespaces)
        operated = [b for b in bodies if _autoscaling(b).get("enabled") and _mode(b) == "operator"]
        snapshot = await self._snapshot() if operated else None
        results = await asyncio.gather(*(self._evaluate_safely(b, snapshot) for b in bodies))
        live = {str(_meta(b).get("uid")) for b in bodies}
        for uid in list(self._memory):
            if uid not in live:
                del self._memory[uid]  # deleted deployments
        return [r for r in results if r is not None]

    async def _snapshot(self) -> ClusterSnapshot | None:
        if not self.settings.cluster_wide_pod_reads:  # other tenants' pods are not read: no capacity cap
            return None
        try:
            nodes = await asyncio.to_thread(self.api.nodes)
            pods = await asyncio.to_thread(self.api.active_pods)
        except ApiError as error:
            if error.code != 403:
                raise
            log.warning("autoscaler cannot list nodes or pods cluster-wide (%s); scale-ups are not capped", error)
            return None
        return ClusterSnapshot(nodes, pods)

    async def _evaluate_safely(self, body: Json, snapshot: ClusterSnapshot | None) -> Outcome | None:
        meta = _meta(body)
        try:
            return await self.evaluate(body, snapshot)
        except Exception as error:  # one deployment's trouble must not stop the others
            log.warning("autoscaler: %s/%s failed this round: %s", meta.get("namespace"), meta.get("name"), error)
            return None

    async def evaluate(self, body: Json, snapshot: ClusterSnapshot | None) -> Outcome:
        """Evaluate one deployment (its body as listed)."""
        namespace, name = str(_meta(body).get("namespace")), str(_meta(body).get("name"))
        if _meta(body).get("deletionTimestamp"):
            return Outcome(namespace, name, "skipped", note="being deleted")
        body = {**body, "status": read_status(body)}  # another version's status must not stop the autoscaler
        try:
            cr = parse_deployment(body)
            plan = planner.plan(cr.spec, self.settings)
        except (ValidationError, planner.PlanError):
            return Outcome(namespace, name, "skipped", note="invalid spec (the reconcile reports it)")
        autoscaling = cr.spec.autoscaling
        if not autoscaling.enabled:
            self._memory.pop(cr.metadata.uid, None)
            return await self._disabled(body, namespace, name)
        if autoscaling.mode != "operator":
            self._memory.pop(cr.metadata.uid, None)
            return await self._standard_mode(body, cr, autoscaling.mode)
        return await self._operate(body, cr, plan, snapshot)

    # ---------------------------------------------------------------------------- mode operator
    async def _operate(
        self, body: Json, cr: GptOssDeployment, plan: ServingPlan, snapshot: ClusterSnapshot | None
    ) -> Outcome:
        namespace, name, uid = cr.namespace, cr.name, cr.metadata.uid
        now = self._clock()
        try:
            config = replace(
                policy_config(cr.spec.autoscaling, max_batch_size=plan.engine.max_batch_size),
                startup_grace_seconds=self.settings.autoscaler_startup_grace_seconds,
            )
        except ValueError as error:
            value = record.invalid_config_value(str(error))
            written = await self._write(body, None, {names.COND_SCALING_ACTIVE: value}, now)
            return Outcome(namespace, name, "skipped", status_written=written, note=str(error))
        placement = self._placement(cr, plan)
        all_pods = snapshot.pods if snapshot is not None else None
        if all_pods is None:
            selector = ",".join(f"{k}={v}" for k, v in sorted(placement.own_pod_labels.items()))
            all_pods = await asyncio.to_thread(self.api.active_pods, namespace, selector)
        pods = own_pods(all_pods, namespace, placement.own_pod_labels)
        memory = self._memory.get(uid) or _Memory(record.stored_history(body.get("status"), now))
        signals = await self._signals(pods, memory)
        current = cr.spec.replicas
        decision = decide(now, current, signals, memory.history, config)
        fit = None if snapshot is None else replicas_that_fit(snapshot.nodes, pods, placement, used=snapshot.gpus_used)
        capped = cap(decision.desired, current, fit) if fit is not None else Cap(decision.desired, False, "")
        applied = capped.replicas
        history = record.compact(memory.history.record(now, decision, config, applied))
        # The record first, then the scale: a decision that could not be recorded raises here and is not acted
        # on, and the reconcile that the scale triggers reads the record along with the new replicas.
        written = await self._record_operator(body, decision, applied, capped, fit, history, now)
        if applied != current:
            await asyncio.to_thread(self.api.scale, namespace, name, applied)
            event = record.rescale_event(decision, applied, capped)
            if event is not None:
                await asyncio.to_thread(self.api.emit_event, body, event.type, event.reason, event.message)
        memory.history = history
        self._memory[uid] = memory
        self._observe(cr, decision, applied, capped)
        return Outcome(namespace, name, "operator", decision, applied, capped.limited, written)

    def _placement(self, cr: GptOssDeployment, plan: ServingPlan) -> Placement:
        """Where the server pods may run, from the Deployment the builders produce (pure, no API call)."""
        children = builders.build_children(cr, plan, self.settings)
        deployment = next(
            c
            for c in children
            if c.get("kind") == "Deployment"
            and (_meta(c).get("labels") or {}).get(names.LABEL_COMPONENT) == names.COMPONENT_SERVER
        )
        spec = deployment.get("spec") or {}
        return Placement.from_pod_spec(
            (spec.get("template") or {}).get("spec") or {},
            gpus_per_replica=plan.gpus_per_replica,
            own_pod_labels=dict((spec.get("selector") or {}).get("matchLabels") or {}),
            gpu_product=plan.gpu_product,
        )

    async def _signals(self, pods: Sequence[Json], memory: _Memory) -> list[ReplicaSignals]:
        """Every pod's signals; the ready ones scraped concurrently (a failed scrape leaves them missing)."""
        states = [readiness(p) for p in pods]
        ready = [p for p, state in zip(pods, states, strict=True) if state.ready]
        samples = await asyncio.gather(*(self._scrape_pod(p) for p in ready))
        by_uid = {_pod_key(p): s for p, s in zip(ready, samples, strict=True)}
        result = [
            replica_signals(
                str(_meta(pod).get("name")),
                ready=state.ready,
                started_at=state.since,
                current=by_uid.get(_pod_key(pod)),
                previous=memory.samples.get(_pod_key(pod)),
            )
            for pod, state in zip(pods, states, strict=True)
        ]
        memory.samples = {k: s for k, s in by_uid.items() if s is not None}
        return result

    async def _scrape_pod(self, pod: Mapping[str, Any]) -> MetricsSample | None:
        """The pod's sample, or None; a failure is logged as a warning once, then at debug until it answers."""
        key = _pod_key(pod)
        try:
            url = metrics_url(self.settings.autoscaler_metrics_url_template, pod)
            sample = await self._scrape(url)
        except ScrapeError as error:
            level = logging.DEBUG if key in self._failing else logging.WARNING
            self._failing.add(key)
            meta = _meta(pod)
            log.log(level, "autoscaler: no metrics from pod %s/%s: %s", meta.get("namespace"), meta.get("name"), error)
            return None
        self._failing.discard(key)
        return sample

    async def _record_operator(
        self,
        body: Json,
        decision: Decision,
        applied: int,
        capped: Cap,
        fit: Fit | None,
        history: DecisionHistory,
        now: float,
    ) -> bool:
        autoscaling = record.operator_status(
            body.get("status"), decision=decision, applied=applied, capped=capped, fit=fit, history=history, now=now
        )
        values = {
            names.COND_CAPACITY_LIMITED: record.capacity_value(decision, fit, capped),
            names.COND_SCALING_ACTIVE: record.operator_scaling_value(
                decision, self.settings.autoscaler_interval_seconds
            ),
        }
        # A None value (a hold on missing data says nothing about capacity) keeps the condition as it is.
        conditions = {k: v for k, v in values.items() if v is not None}
        # A scale about to happen changes the spec: the conditions describe that next generation.
        bump = 1 if applied != decision.current else 0
        return await self._write(body, autoscaling, conditions, now, generation_bump=bump)

    def _observe(self, cr: GptOssDeployment, decision: Decision, applied: int, capped: Cap) -> None:
        if applied > decision.current:
            direction = metrics.DIRECTION_UP
        elif applied < decision.current:
            direction = metrics.DIRECTION_DOWN
        else:
            direction = metrics.DIRECTION_HOLD if decision.direction == Direction.HOLD else metrics.DIRECTION_NONE
        reason = "capacity_limited" if capped.limited else (decision.code or "unknown")
        metrics.observe_autoscaler_decision(namespace=cr.namespace, name=cr.name, direction=direction, reason=reason)
        if decision.direction != Direction.HOLD:
            metrics.set_capacity_limited(
                namespace=cr.namespace, name=cr.name, model=cr.spec.model, limited=capped.limited
            )

    # --------------------------------------------------------------------------- other modes
    async def _standard_mode(self, body: Json, cr: GptOssDeployment, mode: str) -> Outcome:
        keda = await asyncio.to_thread(self.api.serves_keda) if mode == "keda" else False
        child = child_name(cr.name, limit=253)
        unserved = capabilities.tolerance_not_applied(self.settings.server_capabilities, cr.spec.autoscaling)
        value = record.mode_scaling_value(mode, keda_installed=keda, child_name=child, unserved=unserved)
        autoscaling = record.mode_status(body.get("status"), mode)
        conditions = {names.COND_SCALING_ACTIVE: value, names.COND_CAPACITY_LIMITED: None}
        written = await self._write(body, autoscaling, conditions, self._clock())
        metrics.set_capacity_limited(namespace=cr.namespace, name=cr.name, model=cr.spec.model, limited=False)
        return Outcome(cr.namespace, cr.name, mode, status_written=written, note=value.reason)

    async def _disabled(self, body: Json, namespace: str, name: str) -> Outcome:
        status = body.get("status") or {}
        ours = set(record.conditions_by_type(status)) & set(record.OWNED_CONDITIONS)
        if not status.get("autoscaling") and not ours:
            return Outcome(namespace, name, "disabled")
        conditions = dict.fromkeys(record.OWNED_CONDITIONS)
        written = await self._write(body, {}, conditions, self._clock(), remove_autoscaling=True)
        return Outcome(namespace, name, "disabled", status_written=written)

    # ------------------------------------------------------------------------------- writing
    async def _write(
        self,
        body: Json,
        autoscaling: Json | None,
        conditions: Mapping[str, ConditionValue | None],
        now: float,
        *,
        remove_autoscaling: bool = False,
        generation_bump: int = 0,
    ) -> bool:
        """Apply status.autoscaling and the autoscaler's conditions when they changed; False when unchanged.

        Server-side apply as `names.FIELD_MANAGER_AUTOSCALER`, which owns only these fields (the reconcile's
        belong to another manager), so the write needs no resourceVersion and a concurrent reconcile neither
        conflicts with it nor loses to it. A failed apply raises `RecordNotWritten`: nothing is scaled on a
        decision that is not recorded (the next round decides again).
        """
        namespace, name = str(_meta(body).get("namespace")), str(_meta(body).get("name"))
        previous = body.get("status") or {}
        fields = _status_fields(
            body, autoscaling, conditions, now, remove_autoscaling=remove_autoscaling, generation_bump=generation_bump
        )
        live = status_ownership.live_fields(
            previous, keys=("autoscaling",), owned_conditions=names.AUTOSCALER_CONDITIONS
        )
        if status_ownership.same_fields(fields, live):
            return False
        try:
            await asyncio.to_thread(self.api.apply_status, namespace, name, fields, names.FIELD_MANAGER_AUTOSCALER)
        except ApiError as error:
            raise RecordNotWritten(f"status of {namespace}/{name} not recorded ({error}); not scaling") from error
        for event in record.condition_events(previous, fields.get("conditions") or []):
            await asyncio.to_thread(self.api.emit_event, body, event.type, event.reason, event.message)
        return True


def _status_fields(
    body: Json,
    autoscaling: Json | None,
    conditions: Mapping[str, ConditionValue | None],
    now: float,
    *,
    remove_autoscaling: bool,
    generation_bump: int = 0,
) -> Json:
    """Everything the autoscaler states in status: status.autoscaling (None: as it is) and its conditions."""
    status = body.get("status") or {}
    generation = int(_meta(body).get("generation") or 0) + generation_bump
    merged = record.merge_conditions(status, conditions, generation=generation, now=record.rfc3339(now))
    kept = None if remove_autoscaling else (status.get("autoscaling") if autoscaling is None else autoscaling)
    return status_ownership.autoscaler_fields(kept, merged, names.AUTOSCALER_CONDITIONS)


def _pod_key(pod: Mapping[str, Any]) -> str:
    return str(_meta(pod).get("uid") or _meta(pod).get("name"))


def _autoscaling(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return (body.get("spec") or {}).get("autoscaling") or {}


def _mode(body: Mapping[str, Any]) -> str:
    return str(_autoscaling(body).get("mode") or "operator")
