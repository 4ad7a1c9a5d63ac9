"""Every trigger funnels into one work queue; the queue's workers run `Reconciler` (reconcile.py).

- The watch-fed caches (caches.py) see every GptOssDeployment, child, pod and GPU node: a CR whose spec or
  metadata changed, a child of a CR, or a pod of a CR enqueues that CR. So a deleted child is recreated and
  a hand edit of an owned field is reverted within a second or two, and status follows the pods.
- A long resync enqueues every CR, each at a random moment of the period (drift repair and retry, spread
  out instead of 200 reconciles at once).
- The autoscaler's scale changes the CR's generation, which enqueues it like any spec change.

Kopf runs the process (login, liveness endpoint, signals) with no resource handlers of ours: it watches no
resource and writes nothing on the CRs (no annotations, no finalizer). Errors: a transient API error comes
back after the queue's per-key backoff (or the server's Retry-After); a refusal after a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf

from gptoss_operator import builders, gc_pauses, names
from gptoss_operator.caches import ClusterCache
from gptoss_operator.kube import ApiError, Kube, TransientApiError, resource_type
from gptoss_operator.reconcile import OPTIONAL_APIS, Reconciler
from gptoss_operator.settings import OperatorSettings
from gptoss_operator.workqueue import RetryAfter, WorkQueue

log = logging.getLogger(__name__)

KOPF_PREFIX: Final = names.KOPF_ANNOTATION_PREFIX
FINALIZER: Final = f"{names.GROUP}/finalizer"  # Kopf adds it only if a handler needs one; ours do not
PERMANENT_ERROR_DELAY: Final = 60.0
MAX_BACKOFF_SECONDS: Final = 60.0
# Child and pod events come in bursts (a pod is created, scheduled, started, ready; a Deployment's status
# moves with each): they wait this long in the queue so that one reconcile (one status write) answers the
# burst. At fleet scale these echoes outnumber the reconciles that apply anything; collapsed, they leave
# the API server and the workers to the new and changed CRs, which never wait (urgent, no delay).
COALESCE_SECONDS: Final = 1.0

Key = tuple[str, str]


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Kopf's bookkeeping under our group, no events of its own, no peering."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.networking.request_timeout = 60


def backoff(error: TransientApiError, retry: int) -> float:
    """The server's Retry-After when it gave one, else exponential in the retry count (1, 2, 4 ... 60 s)."""
    return max(error.delay if error.retry_after else 0.0, min(MAX_BACKOFF_SECONDS, 2.0**retry))


def reconcile_or_retry(reconciler: Reconciler, namespace: str, name: str, retry: int = 0) -> None:
    """Run one reconcile; transient API trouble -> kopf.TemporaryError(delay) with backoff."""
    try:
        reconciler.reconcile(namespace, name)
    except TransientApiError as error:
        delay = backoff(error, retry)
        raise kopf.TemporaryError(f"transient API error, retrying in {delay:.0f}s: {error}", delay=delay) from error
    except ApiError as error:
        # e.g. a 422 for a child: retrying soon will not help, retrying later might (a CRD appears, RBAC fixed).
        raise kopf.TemporaryError(f"API request refused: {error}", delay=PERMANENT_ERROR_DELAY) from error


def reconcile_or_retry_after(reconciler: Reconciler, namespace: str, name: str) -> None:
    """Run one reconcile for the work queue: API trouble -> RetryAfter (the queue adds its own backoff)."""
    try:
        reconciler.reconcile(namespace, name)
    except TransientApiError as error:
        raise RetryAfter(error.delay if error.retry_after else 0.0, str(error)) from error
    except ApiError as error:
        raise RetryAfter(PERMANENT_ERROR_DELAY, f"API request refused: {error}") from error


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the GptOssDeployment that controls a labelled child, or None."""
    meta = body.get("metadata") or {}
    if not (meta.get("labels") or {}).get(names.LABEL_DEPLOYMENT) or not meta.get("namespace"):
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == names.KIND and ref.get("controller"):
            return str(meta["namespace"]), str(ref.get("name"))  # the label may be shortened; the ref is exact
    return None


def cached_child_kinds(kube: Kube) -> list[Any]:
    """Child kinds to watch: every built-in one, and the optional ones (PodMonitor, KEDA) the cluster serves."""
    kinds: list[Any] = []
    for kind in builders.MANAGED_KINDS:
        if kind.feature is not None:
            try:
                if not kube.has_api(OPTIONAL_APIS[kind.kind], kind.kind):
                    continue
            except ApiError:
                continue  # not served (404) or not allowed: the reconcile lists it if it appears
        kinds.append(resource_type(kind))
    return kinds


class OperatorRuntime:
    """The caches, the work queue and the resync of one operator process (the leader's)."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        *,
        child_kinds: list[Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self._child_kinds = child_kinds
        self.cache: ClusterCache | None = None  # made at start (discovery decides which kinds it watches)
        self.reconciler = Reconciler(kube, settings)
        self.queue: WorkQueue[Key] = WorkQueue(
            self._process, workers=settings.reconcile_workers, max_backoff_seconds=MAX_BACKOFF_SECONDS
        )
        self._rng = rng or random.Random()  # noqa: S311 - resync jitter, not cryptography
        self._executor = ThreadPoolExecutor(max_workers=settings.reconcile_workers, thread_name_prefix="reconcile")
        self._tasks: list[asyncio.Task[None]] = []

    def enqueue(self, namespace: str, name: str, *, urgent: bool = False) -> None:
        """Queue a CR: urgent ones at once and first, others after `COALESCE_SECONDS` (bursts collapse)."""
        if self.settings.namespaces and namespace not in self.settings.namespaces:
            return  # never touch a CR outside the watched namespaces (another operator may own it)
        self.queue.add((namespace, name), delay=0.0 if urgent else COALESCE_SECONDS, urgent=urgent)

    def enqueue_urgent(self, namespace: str, name: str) -> None:
        """A new CR or a changed spec: before the reconciles that only follow pods and children."""
        log.debug("%s/%s: new or changed spec, queued first", namespace, name)
        self.enqueue(namespace, name, urgent=True)

    async def _process(self, key: Key) -> None:
        # Threads of the queue's own: asyncio's default pool (min(32, CPUs + 4), 6 on two cores) is shared with
        # Kopf and the autoscaler and would cap the workers below `reconcile_workers`.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, reconcile_or_retry_after, self.reconciler, *key)

    async def start(self) -> None:
        """Open the queue, start the caches (their first events queue every CR), and start the queue's workers
        only once the caches are synced (client-go's WaitForCacheSync): a reconcile that ran before would
        fall back to LISTs, and right after a failover eight of them at once would each LIST every pod and
        node of the cluster while the caches' own first LISTs still run."""
        self.queue.open()
        kinds = (
            self._child_kinds
            if self._child_kinds is not None
            else await asyncio.to_thread(cached_child_kinds, self.kube)
        )
        cache = ClusterCache(
            self.kube,
            kinds,
            namespaces=self.settings.namespaces,
            on_owner_change=self.enqueue,
            on_spec_change=self.enqueue_urgent,
            cluster_wide_pods=self.settings.cluster_wide_pod_reads,
        )
        self.cache = self.reconciler.cache = cache
        await asyncio.to_thread(cache.start)
        timeout = self.settings.cache_sync_timeout_seconds
        if not await asyncio.to_thread(cache.wait_synced, timeout):
            log.warning("caches not synced after %.0fs; reconciles list until they are", timeout)
        gc_pauses.freeze_long_lived_heap()  # the caches' first state lives on: full collections skip it
        self.queue.start()
        self._tasks.append(asyncio.create_task(self._resync_forever(), name="resync"))
        self._tasks.append(asyncio.create_task(self._tend_the_heap_forever(), name="heap"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.queue.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)  # a running reconcile ends by itself
        if self.cache is not None:
            await asyncio.to_thread(self.cache.stop)

    async def _tend_the_heap_forever(self) -> None:
        """Freeze what survived a long full collection, thaw hourly (gc_pauses.py)."""
        freezer = gc_pauses.HeapFreezer()
        while True:
            await asyncio.sleep(gc_pauses.TEND_EVERY_S)
            freezer.tick()

    async def _resync_forever(self) -> None:
        """Every period, enqueue each CR at a random moment of the next period (from the cache: no LIST)."""
        interval = self.settings.resync_seconds
        while True:
            await asyncio.sleep(interval)
            keys = self.cache.deployment_keys() if self.cache is not None else []
            for namespace, name in keys:
                self.queue.add((namespace, name), delay=self._rng.uniform(0.0, interval))


def register(registry: kopf.OperatorRegistry, runtime: OperatorRuntime) -> None:
    """Start and stop `runtime` with the Kopf operator (explicit registry, so tests can build fresh ones)."""

    @kopf.on.login(registry=registry, errors=kopf.ErrorsMode.IGNORED)  # as Kopf's own fallbacks: others may log in
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own gets none of Kopf's fallback logins: in-cluster token or KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        await runtime.start()

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        await runtime.stop()
