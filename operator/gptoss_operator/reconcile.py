"""One idempotent reconcile of a GptOssDeployment: parse -> plan -> build -> apply -> prune -> observe -> status.

Called by every trigger (kopf create/update/resume, child events, the periodic resync) with the CR's
namespace and name; it reads the CR when it runs (not the trigger's copy of it). Reconciles of
the same CR never overlap: a trigger that arrives while one runs marks it dirty and the running one goes
round once more (child events come in bursts during a rollout).

An invalid spec (pydantic or planner) writes Ready=False/InvalidSpec and an Event and touches no child.
Only metadata and spec are validated; the status (perhaps written by another operator version) is read
defensively (`parsing`). Every desired child is applied even when another one fails; the failures are
reported in the condition ChildrenApplied (child, HTTP code and the API's reason) and one Warning Event,
and then raised so that the caller retries with backoff.

With a `ClusterCache` the CR, its children, pods and GPU nodes come from watch-fed stores: a steady-state
reconcile makes no request at all (no LIST, no GET; writes only when something changed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from pydantic import ValidationError

from gptoss_operator import (
    builders,
    diagnosis,
    download_progress,
    fetch_events,
    metrics,
    names,
    planner,
    rollout,
    status,
    status_ownership,
    trust,
    upgrades,
)
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.autoscaling import capacity as capacity_math
from gptoss_operator.caches import CapacitySnapshot, ClusterCache
from gptoss_operator.kube import (
    GPTOSS,
    PODS,
    RESOURCES_BY_KIND,
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

# Conditions the reconcile applies (as names.FIELD_MANAGER); the autoscaler applies names.AUTOSCALER_CONDITIONS.
RECONCILE_CONDITIONS = (*status.OWNED_CONDITIONS, names.COND_CHILDREN_APPLIED, names.COND_UPDATE_AVAILABLE)
OPERATOR_VERSION = version("gpt-oss-operator")  # recorded in status.runtime (docs/upgrades.md)
MAX_CONFLICT_RETRIES = 3  # immediate re-runs of a triggered reconcile that lost a write race (HTTP 409)
# Server pods whose fetcher is asked for progress per reconcile (a volume per replica): each ask may take the
# reader's timeout, and a few replicas tell how far the download is as well as all of them.
MAX_PROGRESS_ASKS = 4
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


def _claim_template(deployment: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The claim spec of the server pods' own weights volume (a generic ephemeral volume), if they have one."""
    pod_spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for volume in pod_spec.get("volumes") or []:
        template = (volume.get("ephemeral") or {}).get("volumeClaimTemplate")
        if volume.get("name") == builders.weights.WEIGHTS_VOLUME and template:
            return template.get("spec") or {}
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


def adoption_message(refused: Sequence[tuple[str, str]], owner: str) -> str:
    """Why each refused child was left alone, and the fix."""
    return "; ".join(
        f"{kind}/{name} already exists and is not controlled by GptOssDeployment {owner}, so the operator leaves it "
        f"untouched (it never takes over an object it did not create); fix: delete or rename that {kind}, "
        "or give the GptOssDeployment another name"
        for kind, name in refused
    )


def children_condition(
    failures: Sequence[ChildFailure], refused: Sequence[tuple[str, str]] = (), owner: str = ""
) -> status.ConditionValue:
    """ChildrenApplied: True when every child is as desired, else which ones the API server refused and why,
    and which names are taken by objects this GptOssDeployment does not control (never adopted)."""
    if not failures and not refused:
        return status.ConditionValue("True", "AllApplied", "every child is applied as desired")
    parts = [f.describe() for f in failures] + ([adoption_message(refused, owner)] if refused else [])
    reason = _condition_reason(failures) if failures else names.REASON_ADOPTION_REFUSED
    return status.ConditionValue("False", reason, "; ".join(parts)[:1024])


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
    reason = (
        names.REASON_ADOPTION_REFUSED if after.get("reason") == names.REASON_ADOPTION_REFUSED else "ChildrenNotApplied"
    )
    return status.EventSpec("Warning", reason, str(after.get("message", "")))


def first_failure(failures: Sequence[ChildFailure]) -> ApiError:
    """The error to raise for a partly applied CR: a transient one first (it asks for a sooner retry)."""
    transient = [f.error for f in failures if isinstance(f.error, TransientApiError)]
    return transient[0] if transient else failures[0].error


def changed_parts(fields: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Top-level status keys and condition types whose value differs between `fields` and `live` (for logs)."""

    def by_type(value: Any) -> dict[str, Any]:
        return {str(c.get("type")): c for c in value or [] if isinstance(c, Mapping)}

    keys = sorted(k for k in set(fields) | set(live) if k != "conditions" and fields.get(k) != live.get(k))
    wanted, seen = by_type(fields.get("conditions")), by_type(live.get("conditions"))
    changed = sorted(t for t in set(wanted) | set(seen) if wanted.get(t) != seen.get(t))
    return keys + [f"conditions[{t}]" for t in changed]


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
        self._rollout_slots = upgrades.RolloutSlots()
        self._token_secret_found: dict[tuple[str, str], bool] = {}  # as the last reconcile's GET found it
        self._progress = download_progress.ProgressReader()
        self._mount_failures = fetch_events.MountFailureReader(self._list_events)

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
        log.debug("reconcile of %s/%s starts", namespace, name)
        body = self._read_cr(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            metrics.forget_deployment(namespace, name)
            self._rollout_slots.release((namespace, name))
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
        refusal = self._weights_refusal(cr)
        if refusal is not None:
            return self._refused(body, previous, generation, refusal)

        features = builders.ClusterFeatures(pod_monitor=self._serves("PodMonitor"), keda=self._serves("ScaledObject"))
        live_server = self._live_server_deployment(cr)
        version_ = OPERATOR_VERSION
        rendered = upgrades.render(
            cr, plan, self.settings, features, previous, live_server, operator_version=version_, admit=self._admit
        )
        built = rendered.children  # the recorded pod template unless the spec or an accepted update asks anew
        if rendered.applied_update:
            log.info("%s/%s: %s", cr.namespace, cr.name, rendered.condition.message)
        pods_and_capacity = self._surge_when_it_fits(cr, plan, built, live_server)
        synced, decision = self._sync(body, cr, built, features)
        self._release_rollout_slot(cr, synced)
        desired = decision.children  # the pod template held while new weights download (rollout)
        observation = self._observe(
            cr, plan, desired, list(synced.live.values()), held=decision.held, pods_and_capacity=pods_and_capacity
        )
        now = self._now()
        new_status = status.compute_status(
            observation,
            plan,
            previous,
            namespace=cr.namespace,
            cluster_domain=self.settings.cluster_domain,
            now=now,
        )
        children = children_condition(synced.failed, synced.refused, cr.name)
        new_status = with_condition(new_status, previous, names.COND_CHILDREN_APPLIED, children, generation, now)
        new_status = {**new_status, "runtime": rendered.runtime.to_status()}
        update = rendered.condition
        new_status = with_condition(new_status, previous, names.COND_UPDATE_AVAILABLE, update, generation, now)
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
        return self._serving_nothing(body, previous, new_status)

    def _refused(self, body: Json, previous: Mapping[str, Any], generation: int, refusal: trust.Refusal) -> Outcome:
        """The operator will not download as the spec asks (docs/security.md): say why; touch no child."""
        meta = body.get("metadata") or {}
        log.warning("refused weights source of %s/%s: %s", meta.get("namespace"), meta.get("name"), refusal.message)
        new_status = status.refused_weights_status(
            previous, generation=generation, reason=refusal.reason, message=refusal.message, now=self._now()
        )
        return self._serving_nothing(body, previous, new_status)

    def _serving_nothing(self, body: Json, previous: Mapping[str, Any], new_status: Json) -> Outcome:
        """Write the status of a CR the operator will not serve (invalid or refused) and export it as Failed."""
        meta = body.get("metadata") or {}
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
    def _weights_refusal(self, cr: GptOssDeployment) -> trust.Refusal | None:
        """The endpoint against the allow-list, then the token Secret's mark (its metadata only: one GET, made
        only for a CR that names a token)."""
        refusal = trust.endpoint_refusal(cr.spec, self.settings)
        secret_name = trust.token_secret_name(cr.spec)
        if refusal is not None or secret_name is None:
            return refusal
        try:
            secret = self.kube.get_metadata(RESOURCES_BY_KIND["Secret"], cr.namespace, secret_name)
            self._token_secret_found[(cr.namespace, cr.name)] = secret is not None  # status: TokenSecretMissing
        except ApiError as error:
            if error.code != 403:
                raise
            return trust.Refusal(
                names.REASON_TOKEN_SECRET_NOT_MARKED,
                trust.TOKEN_FIELD,
                f"{trust.TOKEN_FIELD}: the operator may not read the metadata of Secret {cr.namespace}/{secret_name} "
                "(HTTP 403), so it cannot check the Secret's mark; grant the operator `get` on secrets (the chart "
                "does) and label the Secret " + f"{names.LABEL_WEIGHTS_TOKEN}={names.LABEL_WEIGHTS_TOKEN_VALUE}",
            )
        return trust.token_secret_refusal(cr.spec, cr.namespace, secret)

    def _serves(self, kind: str) -> bool:
        try:
            return self.kube.has_api(OPTIONAL_APIS[kind], kind)
        except ApiError as error:
            if error.code in (403, 404):
                return False
            raise

    def _sync(
        self, body: Json, cr: GptOssDeployment, built: Sequence[Json], features: builders.ClusterFeatures
    ) -> tuple[SyncResult, rollout.RolloutDecision]:
        """Apply what the rollout decision makes of the built children (it needs the live ones), prune the rest."""
        managed = self._managed_kinds(features)
        if self.cache is None or not self.cache.synced:
            live = self.kube.list_children(cr.namespace, cr.name, managed)
        else:
            live = self.cache.children_of(cr.namespace, cr.name)
            uncached = [r for r in managed if r.kind not in self.cache.children]  # e.g. a CRD installed later
            if uncached:
                live |= self.kube.list_children(cr.namespace, cr.name, uncached)
        live_children = list(live.values())
        # Pods matter only for keeping an older plan ConfigMap, which exists only around a rollout.
        pods = self._own_pods(cr, built) if rollout.stale_plan_config_maps(built, live_children) else []
        decision = rollout.decide(built, live_children, pods)
        return self.kube.sync_children(body, decision.children, managed, live), decision

    # ------------------------------------------------------------------- upgrades (docs/upgrades.md)
    def _live_server_deployment(self, cr: GptOssDeployment) -> Json | None:
        """The server Deployment as it is now (the cache's, else one GET)."""
        if self.cache is not None and self.cache.synced and "Deployment" in self.cache.children:
            found = _find(self.cache.children_of(cr.namespace, cr.name).values(), "Deployment", names.COMPONENT_SERVER)
            return None if found is None else dict(found)
        live = self.kube.get(RESOURCES_BY_KIND["Deployment"], cr.namespace, cr.name)
        return live if live is not None and _has_labels(live, {names.LABEL_COMPONENT: names.COMPONENT_SERVER}) else None

    def _rolling_now(self) -> frozenset[tuple[str, str]]:
        """GptOssDeployments whose server Deployment is mid-rollout (from the cache; none known without it)."""
        store = self.cache.children.get("Deployment") if self.cache is not None and self.cache.synced else None
        return upgrades.rolling_owners(store.items()) if store is not None else frozenset()

    def _admit(self, key: tuple[str, str]) -> tuple[bool, upgrades.SlotView]:
        return self._rollout_slots.try_admit(key, self._rolling_now(), self.settings.max_concurrent_rollouts)

    def _release_rollout_slot(self, cr: GptOssDeployment, synced: SyncResult) -> None:
        """A rollout the throttle admitted holds its slot until its Deployment is seen to have finished."""
        if not upgrades.rollout_in_progress(_find(synced.live.values(), "Deployment", names.COMPONENT_SERVER)):
            self._rollout_slots.release((cr.namespace, cr.name))

    def _surge_when_it_fits(
        self, cr: GptOssDeployment, plan: ServingPlan, built: Sequence[Json], live_server: Json | None
    ) -> tuple[list[Json], status.Capacity | None]:
        """maxSurge 1 when a spare replica fits on free GPUs (upgrades.strategy_for); the pods and capacity seen."""
        wanted = _find(built, "Deployment", names.COMPONENT_SERVER)
        pods, cap = self._pods_and_capacity(cr, plan, wanted, _pod_labels_selector(wanted))
        if isinstance(wanted, dict):
            changes = upgrades.template_hash(wanted["spec"]["template"]) != upgrades.template_hash(
                ((live_server or {}).get("spec") or {}).get("template")
            )
            wanted["spec"]["strategy"] = upgrades.strategy_for(
                live_server, cap, cr.spec.replicas, template_changes=changes
            )
        return pods, cap

    def _own_pods(self, cr: GptOssDeployment, built: Sequence[Json]) -> list[Json]:
        """This CR's server pods: from the pod cache when it is synced, else one LIST."""
        pod_labels = _pod_labels_selector(_find(built, "Deployment", names.COMPONENT_SERVER))
        if self.cache is not None and self.cache.synced:
            return self.cache.pods_of(cr.namespace, pod_labels)
        selector = ",".join(f"{k}={v}" for k, v in sorted(pod_labels.items()))
        return self.kube.active_pods(cr.namespace, selector)

    @staticmethod
    def _managed_kinds(features: builders.ClusterFeatures) -> list[ResourceType]:
        """Kinds to list for pruning; optional kinds only where the cluster serves them."""
        return [
            resource_type(kind)
            for kind in builders.MANAGED_KINDS
            if kind.feature is None or getattr(features, kind.feature, False)
        ]

    def _observe(
        self,
        cr: GptOssDeployment,
        plan: ServingPlan,
        desired: Sequence[Json],
        live: Sequence[Json],
        *,
        held: str | None = None,
        pods_and_capacity: tuple[list[Json], status.Capacity | None] | None = None,
    ) -> status.Observation:
        wanted_deployment = _find(desired, "Deployment", names.COMPONENT_SERVER)
        deployment = _find(live, "Deployment", names.COMPONENT_SERVER)
        pod_labels = _pod_labels_selector(wanted_deployment)
        pods, cap = pods_and_capacity or self._pods_and_capacity(cr, plan, wanted_deployment, pod_labels)
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
            rollout_held=held,
            cluster_wide_pod_reads=self.settings.cluster_wide_pod_reads,
            weights_facts=self._weights_facts(cr, wanted_deployment, live, pods),
        )

    def _weights_facts(
        self, cr: GptOssDeployment, deployment: Mapping[str, Any] | None, live: Sequence[Json], pods: Sequence[Json]
    ) -> diagnosis.WeightsFacts:
        """What status needs to say why the weights are not there yet; nothing is read once the Job completed."""
        job = _find(live, "Job")
        classes = self.cache.storage_class_list() if self.cache is not None and self.cache.synced else None
        class_facts = None if classes is None else [diagnosis.StorageClassFacts.from_object(c) for c in classes]
        secret = trust.token_secret_name(cr.spec)
        secret_found = None if secret is None else self._token_secret_found.get((cr.namespace, cr.name))
        token_key = trust.token_secret_key(cr.spec)
        if cr.spec.weights.existing_claim is not None:
            return diagnosis.WeightsFacts()  # the user's claim holds the weights: nothing downloads
        if job is None:  # a volume per replica: the pods download, no Job
            fetch = builders.weights.FETCH_CONTAINER
            fetching = diagnosis.fetching_pods(pods, fetch)[:MAX_PROGRESS_ASKS]
            progress = {str(_name(p)): found for p in fetching if (found := self._progress.read(p)) is not None}
            return diagnosis.WeightsFacts(
                storage_classes=class_facts,
                token_secret=secret,
                token_secret_found=secret_found,
                token_key=token_key,
                mount_failures=self._stuck_mounts(secret_found, pods, fetch),
                claim_template=_claim_template(deployment),
                fetch_container=fetch,
                replica_progress=progress,
            )
        if diagnosis.job_verdict(job, diagnosis.WeightsFacts()).status == "True":
            return diagnosis.WeightsFacts()
        job_pods = [p for p in self._weights_pods(cr) if diagnosis.is_job_pod(p, str(_name(job)))]
        running = [p for p in job_pods if (p.get("status") or {}).get("phase") == "Running"]
        return diagnosis.WeightsFacts(
            claim=_find(live, "PersistentVolumeClaim", names.COMPONENT_WEIGHTS),
            storage_classes=class_facts,
            job_pods=job_pods,
            token_secret=secret,
            token_secret_found=secret_found,
            token_key=token_key,
            mount_failures=self._stuck_mounts(secret_found, job_pods, builders.weights.FETCH_CONTAINER),
            progress=self._progress.read(running[-1]) if running else None,
        )

    def _stuck_mounts(self, secret_found: bool | None, pods: Sequence[Json], container: str) -> dict[str, str]:
        """The kubelet's FailedMount message for the first download pod that cannot start while the token
        Secret exists (fetch_events: one pod, rate-limited); empty when none is stuck or no token is used."""
        if secret_found is not True:
            return {}
        stuck = next((p for p in pods if diagnosis.not_started(p, container)), None)
        message = None if stuck is None else self._mount_failures.read(stuck)
        return {} if stuck is None or message is None else {str(_name(stuck)): message}

    def _list_events(self, namespace: str, field_selector: str) -> list[Json]:
        try:
            return self.kube.list_items(RESOURCES_BY_KIND["Event"], namespace, field_selector=field_selector)
        except ApiError as error:  # 403: a chart without `list` on events; the diagnosis just says less
            log.debug("cannot list events in %s (%s): %s", namespace, field_selector, error)
            return []

    def _weights_pods(self, cr: GptOssDeployment) -> list[Json]:
        """The download Job's pods, finished ones included (a failed attempt's exit says why)."""
        labels = {names.LABEL_DEPLOYMENT: builders.label_value(cr.name), names.LABEL_COMPONENT: names.COMPONENT_WEIGHTS}
        if self.cache is not None and self.cache.synced:
            return self.cache.pods_labelled(cr.namespace, labels)
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            return self.kube.list_items(PODS, cr.namespace, label_selector=selector)
        except ApiError as error:
            if error.code != 403:
                raise
            return []

    def _pods_and_capacity(
        self,
        cr: GptOssDeployment,
        plan: ServingPlan,
        deployment: Mapping[str, Any] | None,
        pod_labels: Mapping[str, str],
    ) -> tuple[list[Json], status.Capacity | None]:
        """Own server pods, and the GPU capacity (None when nodes or all pods cannot be read)."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(pod_labels.items()))
        if not self.settings.cluster_wide_pod_reads:  # the cluster operator's choice: capacity is not counted
            if self.cache is not None and self.cache.synced:
                return self.cache.pods_of(cr.namespace, pod_labels), None
            return self.kube.active_pods(cr.namespace, selector), None
        try:
            snapshot = self.capacity_snapshot()
        except ApiError as error:
            if error.code != 403:
                raise
            log.warning("cannot read nodes or pods cluster-wide (%s); CapacityAvailable stays Unknown", error)
            return self.kube.active_pods(cr.namespace, selector), None
        if self.cache is not None and self.cache.synced:  # own pods by the cache's index, not a scan of all
            pods = self.cache.pods_of(cr.namespace, pod_labels)
        else:
            pods = [
                p
                for p in snapshot.pods
                if _has_labels(p, pod_labels) and (p.get("metadata") or {}).get("namespace") == cr.namespace
            ]
        pod_spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        placement = capacity_math.Placement.from_pod_spec(
            pod_spec, gpus_per_replica=plan.gpus_per_replica, own_pod_labels=pod_labels, gpu_product=plan.gpu_product
        )
        fit = capacity_math.replicas_that_fit(snapshot.nodes, pods, placement, used=snapshot.gpus_used)
        cap = status.Capacity(
            product=plan.gpu_product,
            gpus_per_replica=plan.gpus_per_replica,
            nodes=len(fit.nodes),
            free_gpus=fit.free_gpus,
            replicas_that_fit=fit.additional,
            scheduled_replicas=fit.placed,
        )
        return pods, cap

    def _read_cr(self, namespace: str, name: str) -> Json | None:
        """The CR from the watch-fed cache once synced (no request; it is what enqueued this key), else a GET.

        A cached body may trail the server by one event: the decisions stay right (the event that follows
        enqueues the CR again), and the cache holds the reconcile's own status writes at once.
        """
        if self.cache is not None and self.cache.synced:
            return self.cache.deployment(namespace, name)
        return self.kube.get(GPTOSS, namespace, name)

    def capacity_snapshot(self) -> CapacitySnapshot:
        """GPU nodes and active pods: from the caches when they are synced, else listed (two LISTs)."""
        if self.cache is not None and self.cache.synced:
            return self.cache.snapshot()
        return CapacitySnapshot(self.kube.nodes(), self.kube.active_pods())

    def _write_status(self, body: Json, previous: Mapping[str, Any], new_status: Json) -> bool:
        """Apply the reconcile's status fields when they differ from the live ones; False when nothing changed.

        Written by server-side apply as `names.FIELD_MANAGER`: only the keys and conditions the reconcile
        owns, so the autoscaler's (another manager) are never touched. Status fields that an older version
        merge-patched are first moved to the apply managers (once per CR); an apply then follows, so the
        fields no writer states any more are removed.
        """
        fields = status_ownership.reconcile_fields(
            previous, new_status, owned_keys=status.OWNED_KEYS, owned_conditions=RECONCILE_CONDITIONS
        )
        live = status_ownership.live_fields(previous, keys=status.OWNED_KEYS, owned_conditions=RECONCILE_CONDITIONS)
        migrated = self.kube.upgrade_status_managers(body)
        if not migrated and status_ownership.same_fields(fields, live):
            return False
        meta = body.get("metadata") or {}
        if log.isEnabledFor(logging.DEBUG):  # what made a write (an idle resync must make none)
            log.debug(
                "status of %s/%s changes: %s", meta.get("namespace"), meta.get("name"), changed_parts(fields, live)
            )
        written = self.kube.apply_status(str(meta["namespace"]), str(meta["name"]), fields, names.FIELD_MANAGER)
        if self.cache is not None:
            self.cache.remember_written(written)  # the next reconcile reads this status, not the one before
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
