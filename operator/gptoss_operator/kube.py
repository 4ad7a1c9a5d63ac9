"""The only module that talks to the Kubernetes API server.

Plain REST over the `kubernetes` client's transport (auth, TLS, token refresh), so every request goes
through one function that counts it by verb and code. What it does:

- server-side apply of children under field manager `gpt-oss-operator` (force), skipped when the live
  object already holds what we would apply (hash annotation + field-by-field comparison), so a resync
  with nothing changed writes nothing;
- list children by the label `gptoss.io/deployment=<name>` and delete those no longer desired (prune);
- discovery of optional APIs (PodMonitor, KEDA ScaledObject), cached briefly;
- nodes and pods for the capacity check; the CR; core/v1 Events;
- status by server-side apply on the status subresource, one field manager per writer (`apply_status`),
  and the one-time move of status fields written by the old merge patches (`upgrade_status_managers`).

Errors: 404 reads return None; conflicts, throttling, server errors and connection failures raise
`TransientApiError` (the handlers turn it into `kopf.TemporaryError`); anything else raises `ApiError`.
Request bodies are never logged (Secrets could pass through).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib.metadata import version
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import quote, urlencode

import urllib3

from gptoss_operator import metrics, names, status_ownership

log = logging.getLogger(__name__)

Json = dict[str, Any]

ANNOTATION_APPLIED_HASH: Final = f"{names.GROUP}/applied-hash"
APPLY_CONTENT_TYPE: Final = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE: Final = "application/merge-patch+json"
JSON_PATCH_CONTENT_TYPE: Final = "application/json-patch+json"
# Ask for metadata only (no fallback to the full object: a Secret's data must never reach the operator).
PARTIAL_METADATA_ACCEPT: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
REPLACEABLE_KINDS: Final = frozenset({"Job"})  # immutable pod template: replace instead of update
TRANSIENT_CODES: Final = frozenset({409, 429, 500, 502, 503, 504})
DEFAULT_BACKOFF_SECONDS: Final = 5.0
MAX_BACKOFF_SECONDS: Final = 60.0
REQUEST_TIMEOUT: Final = (5.0, 30.0)  # connect, read
LIST_PAGE_SIZE: Final = 250  # objects per page of a cache's (re)list
# Each watch holds a connection for its whole life (about a dozen watches), plus the reconcile workers.
CONNECTION_POOL_SIZE: Final = 64
APPLY_THREADS: Final = 64  # children applied at once, over all reconciles (8 workers x 7 children + room)


# ------------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """The API server refused a request (a code that retrying will not fix)."""

    def __init__(self, verb: str, path: str, code: int, message: str, reason: str = "") -> None:
        super().__init__(f"{verb} {path}: HTTP {code}: {message}")
        self.verb = verb
        self.path = path
        self.code = code
        self.message = message
        self.reason = reason  # the Status reason the server gave (Invalid, Forbidden, Conflict ...), or ""


class TransientApiError(ApiError):
    """A conflict, throttling, server error or lost connection: retry after `delay` seconds."""

    def __init__(
        self,
        verb: str,
        path: str,
        code: int,
        message: str,
        delay: float,
        *,
        retry_after: bool = False,
        reason: str = "",
    ) -> None:
        super().__init__(verb, path, code, message, reason)
        self.delay = delay
        self.retry_after = retry_after  # the delay is the server's Retry-After


def _retry_after(headers: Mapping[str, str] | None) -> float:
    raw = (headers or {}).get("Retry-After")
    try:
        return min(MAX_BACKOFF_SECONDS, max(1.0, float(raw))) if raw else DEFAULT_BACKOFF_SECONDS
    except ValueError:
        return DEFAULT_BACKOFF_SECONDS


# --------------------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class ResourceType:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base


_KNOWN: Final = (
    ResourceType("v1", "ConfigMap", "configmaps"),
    ResourceType("v1", "Service", "services"),
    ResourceType("v1", "ServiceAccount", "serviceaccounts"),
    ResourceType("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ResourceType("v1", "Secret", "secrets"),
    ResourceType("v1", "Pod", "pods"),
    ResourceType("v1", "Event", "events"),
    ResourceType("v1", "Node", "nodes", namespaced=False),
    ResourceType("apps/v1", "Deployment", "deployments"),
    ResourceType("apps/v1", "StatefulSet", "statefulsets"),
    ResourceType("batch/v1", "Job", "jobs"),
    ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ResourceType("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
    ResourceType("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    ResourceType("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ResourceType(names.API_VERSION, names.KIND, names.PLURAL),
)
RESOURCES_BY_KIND: Final = {r.kind: r for r in _KNOWN}
GPTOSS: Final = RESOURCES_BY_KIND[names.KIND]
PODS: Final = RESOURCES_BY_KIND["Pod"]
NODES: Final = RESOURCES_BY_KIND["Node"]
EVENTS: Final = RESOURCES_BY_KIND["Event"]


@runtime_checkable
class KindLike(Protocol):
    @property
    def api_version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def plural(self) -> str: ...


def resource_type(kind: object, api_version: str | None = None) -> ResourceType:
    """The ResourceType of "Deployment", ("apps/v1", "Deployment"), a ResourceType or a builders.ManagedKind."""
    if isinstance(kind, ResourceType):
        return kind
    if isinstance(kind, KindLike):  # e.g. builders.ManagedKind
        namespaced = RESOURCES_BY_KIND.get(kind.kind, GPTOSS).namespaced
        return ResourceType(kind.api_version, kind.kind, kind.plural, namespaced)
    if isinstance(kind, tuple) and len(kind) == 2:
        api_version, kind = str(kind[0]), kind[1]
    known = RESOURCES_BY_KIND.get(str(kind))
    if known is not None and (api_version is None or known.api_version == api_version):
        return known
    if api_version is None:
        raise ValueError(f"unknown kind {kind!r}: give its apiVersion too")
    return ResourceType(api_version, str(kind), str(kind).lower() + "s")


def resource_of(obj: Mapping[str, Any]) -> ResourceType:
    return resource_type(str(obj.get("kind")), str(obj.get("apiVersion")))


# ------------------------------------------------------------------------------ desired vs live
def _strip_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def manifest_hash(obj: Mapping[str, Any]) -> str:
    """A short, stable hash of a manifest (without our hash annotation)."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ANNOTATION_APPLIED_HASH}
    meta["annotations"] = annotations
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def with_applied_hash(obj: Mapping[str, Any]) -> Json:
    """The manifest to apply: Nones dropped and the hash of its content as an annotation."""
    clean: Json = _strip_none(dict(obj))
    meta = dict(clean.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_APPLIED_HASH: manifest_hash(clean)}
    clean["metadata"] = meta
    return clean


def _quantity(value: str) -> Decimal | None:
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal: dict[str, Decimal | int] = {
        "m": Decimal("0.001"),
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "P": 10**15,
        "E": 10**18,
    }
    try:
        for suffix, factor in suffixes.items():
            if value.endswith(suffix):
                return Decimal(value[: -len(suffix)]) * factor
        if value and value[-1] in decimal:
            return Decimal(value[:-1]) * Decimal(decimal[value[-1]])
        return Decimal(value)
    except (InvalidOperation, ValueError):
        return None


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, str | int) and isinstance(live, str | int) and not isinstance(desired, bool):
        left, right = _quantity(str(desired)), _quantity(str(live))
        return left is not None and left == right  # "0.5" is stored as "500m"
    return False


def is_subset(desired: Any, live: Any) -> bool:
    """Every field of `desired` has the same value in `live` (fields the server added are ignored).

    A field absent from `live` matches an empty or zero desired value, as the API server drops those.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return not desired and live is None
        return all(
            is_subset(value, live[key]) if key in live else not value and value is not True
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list):
            return not desired and live is None
        return len(desired) == len(live) and all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
    return _same_scalar(desired, live)


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether applying `desired` (with its hash annotation) would change `live`."""
    if live is None or (live.get("metadata") or {}).get("deletionTimestamp"):
        return True
    live_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED_HASH)
    desired_hash = ((desired.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED_HASH)
    if live_hash != desired_hash:
        return True  # also catches fields we stopped setting: the apply removes them
    return not is_subset({k: v for k, v in desired.items() if k != "status"}, live)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind")), str((obj.get("metadata") or {}).get("name"))


def is_controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


@dataclass(frozen=True)
class ChildFailure:
    """A child the API server refused to apply or delete."""

    kind: str
    name: str
    action: str  # "apply" or "prune"
    error: ApiError

    def describe(self) -> str:
        reason = f" {self.error.reason}" if self.error.reason else ""
        return f"{self.action} {self.kind}/{self.name}: HTTP {self.error.code}{reason}: {self.error.message}"


@dataclass(frozen=True)
class SyncResult:
    """What `sync_children` did and saw."""

    applied: tuple[tuple[str, str], ...]
    pruned: tuple[tuple[str, str], ...]
    live: Mapping[tuple[str, str], Json]  # the children after the sync, by (kind, name)
    failed: tuple[ChildFailure, ...] = ()
    # Desired children whose name is taken by an object this owner does not control: left untouched.
    refused: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------- client
def without_client_retries(configuration: Any) -> Any:
    """Retry only failed connects in the client; Kopf's backoff handles 409/429/5xx without blocking a thread."""
    configuration.retries = urllib3.util.Retry(
        total=2, connect=2, read=0, redirect=0, status=0, other=0, respect_retry_after_header=False
    )
    return configuration


RequestHook = Callable[[str, int | str], None]


class Kube:
    """A small client of the API server; one per operator process (thread-safe)."""

    def __init__(
        self,
        api_client: Any,
        *,
        field_manager: str = names.FIELD_MANAGER,
        on_request: RequestHook = metrics.observe_api_request,
        discovery_ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = api_client
        self._field_manager = field_manager
        self._on_request = on_request
        self._discovery_ttl = discovery_ttl_seconds
        self._clock = clock
        self._discovery: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self._appliers = ThreadPoolExecutor(max_workers=APPLY_THREADS, thread_name_prefix="apply")

    @classmethod
    def from_environment(cls, **kwargs: Any) -> Kube:
        """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
        from kubernetes import client, config

        configuration = client.Configuration()
        configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        api_client = client.ApiClient(without_client_retries(configuration))
        api_client.user_agent = f"{names.FIELD_MANAGER}/{version('gpt-oss-operator')}"
        return cls(api_client, **kwargs)

    # ------------------------------------------------------------------------------ transport
    def request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> Json | None:
        """One request; returns the decoded JSON, or None for 404. Counts it by `verb` and code."""
        url_path = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            serialized = self._client.param_serialize(
                method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            response = self._client.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
            raw = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self._on_request(verb, "connection-error")
            raise TransientApiError(verb, path, 0, type(error).__name__, DEFAULT_BACKOFF_SECONDS) from error
        code = int(response.status)
        self._on_request(verb, code)
        log.debug("%s %s: HTTP %d", verb, path, code)
        if code == 404 and method in ("GET", "DELETE"):
            return None
        if code >= 300:
            message, reason = _error_message(raw), _error_reason(raw)
            if code in TRANSIENT_CODES:
                has_retry_after = bool((response.headers or {}).get("Retry-After"))
                raise TransientApiError(
                    verb,
                    path,
                    code,
                    message,
                    _retry_after(response.headers),
                    retry_after=has_retry_after,
                    reason=reason,
                )
            raise ApiError(verb, path, code, message, reason)
        return json.loads(raw) if raw else {}

    # ----------------------------------------------------------------------------- reads
    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Json | None:
        return self.request("get", "GET", rtype.path(namespace, name))

    def get_metadata(self, rtype: ResourceType, namespace: str | None, name: str) -> Json | None:
        """An object's metadata only (PartialObjectMetadata), or None when absent.

        For Secrets: the operator learns a token Secret's labels without ever receiving its data. (RBAC
        cannot tell the two apart; the `get` verb covers both, which is why the operator asks for this form.)
        """
        return self.request("get", "GET", rtype.path(namespace, name), accept=PARTIAL_METADATA_ACCEPT)

    def list_items(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Json]:
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        result = self.request("list", "GET", rtype.path(namespace), query=query)
        items: list[Json] = list((result or {}).get("items") or [])
        for item in items:  # list items carry no kind/apiVersion
            item.setdefault("kind", rtype.kind)
            item.setdefault("apiVersion", rtype.api_version)
        return items

    def list_pages(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = LIST_PAGE_SIZE,
    ) -> Iterator[tuple[list[Json], str]]:
        """Objects of `rtype` (all namespaces by default), a page at a time, with the list's resourceVersion.

        Pages keep the heap small: 2,000 pods in one response are ~23 MB of JSON and ~100 MiB parsed, a page
        of 250 an eighth of that, and the caller can reduce each page before the next arrives.
        """
        query = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        query["limit"] = str(page_size)
        while True:
            result = self.request("list", "GET", rtype.path(namespace), query=query) or {}
            items: list[Json] = list(result.get("items") or [])
            for item in items:
                item.setdefault("kind", rtype.kind)
                item.setdefault("apiVersion", rtype.api_version)
            meta = result.get("metadata") or {}
            yield items, str(meta.get("resourceVersion") or "")
            if not meta.get("continue"):
                return
            query["continue"] = str(meta["continue"])

    def watch(
        self,
        rtype: ResourceType,
        resource_version: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        on_open: Callable[[Any], None] | None = None,
    ) -> Iterator[Json]:
        """Watch events of `rtype` (all namespaces by default) from `resource_version` until the stream ends.

        Yields the decoded events ({"type": ..., "object": ...}); an ERROR event (e.g. 410 Gone: the version
        is too old) raises `TransientApiError` so that the caller lists again. `on_open` receives the open
        response (its `shutdown()` ends a blocked read from another thread).
        """
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        if resource_version:
            query["resourceVersion"] = resource_version
        query |= {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        path = rtype.path(namespace)
        try:
            serialized = self._client.param_serialize(
                "GET",
                path + "?" + urlencode(query),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(*serialized, _request_timeout=(5.0, timeout_seconds + 30.0))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self._on_request("watch", "connection-error")
            raise TransientApiError("watch", path, 0, type(error).__name__, DEFAULT_BACKOFF_SECONDS) from error
        self._on_request("watch", int(response.status))
        if on_open is not None:
            on_open(response.response)
        if int(response.status) >= 300:
            raise TransientApiError("watch", path, int(response.status), _error_message(response.read()), 1.0)
        yield from _watch_events(response.response, path)

    def has_api(self, api_version: str, kind: str) -> bool:
        """Whether the server serves `kind` in `api_version` (discovery, cached for a short while)."""
        now = self._clock()
        with self._lock:
            cached = self._discovery.get(api_version)
        if cached is None or now - cached[0] > self._discovery_ttl:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            result = self.request("discover", "GET", path)
            kinds = frozenset(str(r.get("kind")) for r in (result or {}).get("resources") or [])
            cached = (now, kinds)
            with self._lock:
                self._discovery[api_version] = cached
        return kind in cached[1]

    def server_version(self) -> Json:
        """The API server's /version (gitVersion, major, minor, ...)."""
        return self.request("discover", "GET", "/version") or {}

    def dry_run_create(self, obj: Mapping[str, Any]) -> Json:
        """What the server would store for `obj`: a create with dryRun=All (defaulting, admission and the
        dropping of fields whose feature gate is off all run; nothing is persisted). capabilities.py probes with it."""
        rtype = resource_of(obj)
        path = rtype.path((obj.get("metadata") or {}).get("namespace"))
        query = {"dryRun": "All", "fieldManager": self._field_manager}
        return self.request("create", "POST", path, query=query, body=dict(obj)) or {}

    def nodes(self) -> list[Json]:
        return self.list_items(NODES)

    def active_pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[Json]:
        """Pods that hold or wait for resources (not Succeeded/Failed); all namespaces by default."""
        return self.list_items(
            PODS,
            namespace,
            label_selector=label_selector,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )

    # ---------------------------------------------------------------------------- writes
    def apply(self, obj: Mapping[str, Any]) -> Json:
        """Server-side apply of `obj` (force: our manager wins conflicts over fields we own)."""
        rtype = resource_of(obj)
        meta = obj.get("metadata") or {}
        path = rtype.path(meta.get("namespace"), meta.get("name"))
        query = {"fieldManager": self._field_manager, "force": "true"}
        result = self.request("apply", "PATCH", path, query=query, body=dict(obj), content_type=APPLY_CONTENT_TYPE)
        return result or {}

    def delete(self, obj: Mapping[str, Any]) -> None:
        """Delete `obj` if it is still the same object (uid precondition); background propagation."""
        rtype = resource_of(obj)
        meta = obj.get("metadata") or {}
        body: Json = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if meta.get("uid"):
            body["preconditions"] = {"uid": meta["uid"]}
        self.request(
            "delete",
            "DELETE",
            rtype.path(meta.get("namespace"), meta.get("name")),
            body=body,
            content_type="application/json",
        )

    def apply_status(self, namespace: str, name: str, status_fields: Mapping[str, Any], field_manager: str) -> Json:
        """Server-side apply of `status_fields` to the CR's status subresource as `field_manager` (force).

        The body states everything this writer owns in status (a field it applied before and leaves out now is
        removed); other managers' fields, and their entries of the conditions list map, stay. No
        resourceVersion precondition: two writers that own different fields cannot overwrite each other.
        """
        body = {
            "apiVersion": GPTOSS.api_version,
            "kind": GPTOSS.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status_fields),
        }
        query = {"fieldManager": field_manager, "force": "true"}
        result = self.request(
            "apply",
            "PATCH",
            GPTOSS.path(namespace, name, "status"),
            query=query,
            body=body,
            content_type=APPLY_CONTENT_TYPE,
        )
        return result or {}

    def upgrade_status_managers(self, body: Mapping[str, Any]) -> bool:
        """Move status fields of the old merge-patch managers to the apply managers (csaupgrade); False: none.

        One JSON patch of `metadata.managedFields` that also replaces `metadata.resourceVersion` with the
        version the move was computed from, so a concurrent change makes it a 409 (computed again next time).
        """
        meta = body.get("metadata") or {}
        conditions = (body.get("status") or {}).get("conditions") if isinstance(body.get("status"), Mapping) else []
        upgraded = status_ownership.upgraded_managed_fields(
            meta.get("managedFields") or [], [c for c in conditions or [] if isinstance(c, Mapping)]
        )
        if upgraded is None:
            return False
        patch = [
            {"op": "replace", "path": "/metadata/managedFields", "value": upgraded},
            {"op": "replace", "path": "/metadata/resourceVersion", "value": str(meta.get("resourceVersion"))},
        ]
        path = GPTOSS.path(str(meta.get("namespace")), str(meta.get("name")))
        self.request("patch", "PATCH", path, body=patch, content_type=JSON_PATCH_CONTENT_TYPE)
        log.info(
            "moved status fields of %s/%s from merge-patch managers to apply managers",
            meta.get("namespace"),
            meta.get("name"),
        )
        return True

    def scale(self, namespace: str, name: str, replicas: int) -> Json:
        """Set a GptOssDeployment's replicas through its scale subresource (as `kubectl scale` does)."""
        body = {"spec": {"replicas": replicas}}
        result = self.request(
            "patch", "PATCH", GPTOSS.path(namespace, name, "scale"), body=body, content_type=MERGE_CONTENT_TYPE
        )
        return result or {}

    def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved` (best effort: a failure is logged, never raised)."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'gptoss')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", names.API_VERSION),
                "kind": involved.get("kind", names.KIND),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": names.FIELD_MANAGER},
            "reportingComponent": names.FIELD_MANAGER,
            "reportingInstance": names.FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": None,
            "count": 1,
        }
        try:
            self.request("create", "POST", EVENTS.path(namespace), body=_strip_none(event))
        except ApiError as error:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, meta.get("name"), error)

    # ------------------------------------------------------------------------------- children
    def list_children(
        self, namespace: str, owner_name: str, kinds: Iterable[ResourceType]
    ) -> dict[tuple[str, str], Json]:
        selector = f"{names.LABEL_DEPLOYMENT}={owner_name}"
        found: dict[tuple[str, str], Json] = {}
        for rtype in kinds:
            for item in self.list_items(rtype, namespace, label_selector=selector):
                found[object_key(item)] = item
        return found

    def sync_children(
        self,
        owner: Mapping[str, Any],
        desired: Sequence[Mapping[str, Any]],
        managed: Iterable[ResourceType],
        live: Mapping[tuple[str, str], Json] | None = None,
    ) -> SyncResult:
        """Apply each desired child that differs from its live object, then prune undesired owned ones.

        `live` is the owner's children as a watch-fed cache holds them; without it they are listed. A child
        the server refuses does not stop the others: it is reported in `SyncResult.failed`. An object that
        already holds a desired child's name but is not controlled by the owner is never taken over (a forced
        apply would silently adopt a user's object): it is left as it is and reported in `SyncResult.refused`.
        """
        meta = owner.get("metadata") or {}
        namespace, owner_name, owner_uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        if live is None:
            kinds = {r.kind: r for r in managed}
            for child in desired:
                kinds.setdefault(str(child.get("kind")), resource_of(child))
            current = self.list_children(namespace, owner_name, kinds.values())
        else:
            current = dict(live)
        applied: list[tuple[str, str]] = []
        failed: list[ChildFailure] = []
        refused: list[tuple[str, str]] = []
        manifests = [with_applied_hash(child) for child in desired]
        changed = [m for m in manifests if needs_apply(m, current.get(object_key(m)))]
        # Children are independent objects (a pod waits for its ConfigMap and claim by itself): apply them at
        # once, so a new CR costs one round trip of latency rather than seven.
        results = list(self._appliers.map(lambda m: self._apply_one(m, current.get(object_key(m)), owner_uid), changed))
        for manifest, (result, error) in zip(changed, results, strict=True):
            key = object_key(manifest)
            if error is not None:
                failed.append(ChildFailure(key[0], key[1], "apply", error))
            elif result is None:
                current.pop(key, None)  # someone else's object: not ours to observe or prune
                refused.append(key)
            else:
                current[key] = result
                applied.append(key)
        wanted = {object_key(child) for child in desired}
        pruned: list[tuple[str, str]] = []
        for key, obj in list(current.items()):
            if key in wanted or not is_controlled_by(obj, owner_uid):
                continue
            try:
                self.delete(obj)
                del current[key]
                pruned.append(key)
            except ApiError as error:
                failed.append(ChildFailure(key[0], key[1], "prune", error))
        return SyncResult(tuple(applied), tuple(pruned), current, tuple(failed), tuple(refused))

    def _apply_one(
        self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None, owner_uid: str
    ) -> tuple[Json | None, ApiError | None]:
        """Apply one child: (the applied object, None), (None, None) when its name belongs to an object the
        owner does not control (left untouched), or ({}, the error)."""
        try:
            if live is None:  # not among the owner's children: a GET tells "absent" from "someone else's"
                live = self.get(
                    resource_of(manifest), (manifest.get("metadata") or {}).get("namespace"), object_key(manifest)[1]
                )
            if live is not None and not is_controlled_by(live, owner_uid):
                return None, None
            return self._apply_or_replace(manifest, live), None
        except ApiError as error:
            return {}, error

    def _apply_or_replace(self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> Json:
        """Apply; a Job whose (immutable) pod template changed is deleted so the next attempt recreates it."""
        try:
            return self.apply(manifest)
        except ApiError as error:
            if error.code != 422 or manifest.get("kind") not in REPLACEABLE_KINDS or live is None:
                raise
            log.info("%s %s changed an immutable field; deleting it to recreate", manifest["kind"], object_key(live)[1])
            self.delete(live)
            raise TransientApiError(error.verb, error.path, 422, "recreating after an immutable change", 2.0) from error


def _watch_events(stream: Any, path: str) -> Iterator[Json]:
    """Decode a watch stream (one JSON event per line) until it ends; ERROR events raise."""
    buffer = b""
    try:
        for chunk in stream.stream(64 * 1024, decode_content=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise TransientApiError(
                        "watch", path, int(status.get("code") or 500), str(status.get("message")), 1.0
                    )
                yield event
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise TransientApiError("watch", path, 0, type(error).__name__, 1.0) from error
    finally:
        stream.release_conn()


def _error_reason(raw: bytes | None) -> str:
    """The `reason` of a Status body (e.g. Invalid, Forbidden), or "" when there is none."""
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        return ""
    return str(decoded.get("reason") or "") if isinstance(decoded, dict) else ""


def _error_message(raw: bytes | None) -> str:
    if not raw:
        return ""
    try:
        decoded = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace")
    return str(decoded.get("message", "")) if isinstance(decoded, dict) else ""
