"""Thin Kopf handlers: every trigger funnels into `Reconciler` (reconcile.py).

- create / update / resume of a GptOssDeployment: reconcile now; a transient API error becomes
  `kopf.TemporaryError` so Kopf retries with backoff (its progress lives in annotations under
  `kopf.gptoss.io`).
- events of owned children (labelled `gptoss.io/deployment`): reconcile the owner soon, so a deleted child
  is recreated and a hand edit of an owned field is reverted within a second or two, and status follows
  the pods.
- a periodic resync (one task for the whole operator, not a per-object timer: Kopf timers need a
  finalizer, and a finalizer would make deleting a CR hang while the operator is down).

No handler returns a value (Kopf would store it in the status) and Kopf posts no events of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import kopf

from gptoss_operator import names
from gptoss_operator.kube import ApiError, TransientApiError
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

KOPF_PREFIX: Final = names.KOPF_ANNOTATION_PREFIX
FINALIZER: Final = f"{names.GROUP}/finalizer"  # Kopf adds it only if a handler needs one; ours do not
PERMANENT_ERROR_DELAY: Final = 60.0
MAX_BACKOFF_SECONDS: Final = 60.0

# Built-in child kinds whose events trigger a reconcile of their owner: (group, version, plural).
WATCHED_CHILDREN: Final = (
    ("apps", "v1", "deployments"),
    ("batch", "v1", "jobs"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "persistentvolumeclaims"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Kopf's bookkeeping under our group, no events of its own, no peering."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.queueing.error_delays = [1, 2, 5, 10, 20, 30]
    for _group, _version, plural in WATCHED_CHILDREN:  # server-side filter: only our children stream in
        settings.watching.label_selectors[plural] = names.LABEL_DEPLOYMENT


def backoff(error: TransientApiError, retry: int) -> float:
    """The server's Retry-After when it gave one, else exponential in Kopf's retry count (1, 2, 4 ... 60 s)."""
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


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the GptOssDeployment that controls a labelled child, or None."""
    meta = body.get("metadata") or {}
    if not (meta.get("labels") or {}).get(names.LABEL_DEPLOYMENT) or not meta.get("namespace"):
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == names.KIND and ref.get("controller"):
            return str(meta["namespace"]), str(ref.get("name"))  # the label may be shortened; the ref is exact
    return None


async def resync_forever(reconciler: Reconciler, namespaces: Sequence[str], interval: float) -> None:
    """Every `interval` seconds, reconcile every GptOssDeployment (drift repair and retry of triggers)."""
    while True:
        await asyncio.sleep(interval)
        try:
            keys = await asyncio.to_thread(reconciler.list_all, namespaces)
        except ApiError as error:
            log.warning("resync could not list GptOssDeployments: %s", error)
            continue
        for namespace, name in keys:
            await asyncio.to_thread(reconciler.trigger, namespace, name)


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, settings: OperatorSettings) -> None:
    """Register every handler in `registry` (explicit, so tests can build fresh operators)."""
    resync_tasks: list[asyncio.Task[None]] = []
    operator_settings = settings

    @kopf.on.login(registry=registry, errors=kopf.ErrorsMode.IGNORED)  # as Kopf's own fallbacks: others may log in
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own gets none of Kopf's fallback logins: in-cluster token or KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        resync_tasks.append(
            asyncio.create_task(
                resync_forever(reconciler, operator_settings.namespaces, operator_settings.resync_seconds)
            )
        )

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        for task in resync_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @kopf.on.resume(names.GROUP, names.VERSION, names.PLURAL, registry=registry, id="reconcile-resume")
    @kopf.on.create(names.GROUP, names.VERSION, names.PLURAL, registry=registry, id="reconcile-create")
    @kopf.on.update(names.GROUP, names.VERSION, names.PLURAL, registry=registry, id="reconcile-update")
    def _reconcile(namespace: str | None, name: str, retry: int, **_: Any) -> None:
        reconcile_or_retry(reconciler, namespace or "default", name, retry)

    def _child_event(body: Mapping[str, Any], **_: Any) -> None:
        owner = owner_of(body)
        if owner is not None:
            reconciler.trigger(*owner)

    for group, version, plural in WATCHED_CHILDREN:
        kopf.on.event(
            group=group,
            version=version,
            plural=plural,
            registry=registry,
            id=f"child-{plural}",
            labels={names.LABEL_DEPLOYMENT: kopf.PRESENT},
        )(_child_event)
