"""Watch-fed caches of what a reconcile reads: the operator's children, GPU nodes and pods (reduced).

One LIST per resource at start (and after a lost watch), then a WATCH from the list's resourceVersion:
a steady-state reconcile reads these stores and makes no LIST at all. Pods and nodes are reduced on
arrival to the fields capacity and status read (a full pod is ~10 kB of JSON; the reduced one a tenth),
so 2,000 pods cost a few MiB of heap rather than ~100 MiB per LIST.

Each store is fed by a `Reflector` thread (the `Kube` client is synchronous); `on_change` is called with
every changed object so the operator can enqueue its owner. The capacity snapshot (`ClusterCache.snapshot`)
is shared by reconciles and the autoscaler: both read the same nodes and pods.

Nothing a reconcile reads costs the size of the fleet: pods and children are indexed by namespace and
`gptoss.io/deployment` label, the GPUs held per node are counted as pods change (`GpuUsage`), and the
snapshot is made again only after a node or pod changed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Protocol

from gptoss_operator import names
from gptoss_operator.autoscaling import capacity
from gptoss_operator.diagnosis import DEFAULT_CLASS_ANNOTATIONS
from gptoss_operator.kube import GPTOSS, NODES, PODS, ApiError, Json, Kube, ResourceType, object_key, resource_type

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Reducer = Callable[[Json], Json]
OnChange = Callable[[str, Json], None]  # (event type, reduced object)

# StorageClasses say why a weights cache PVC stays Pending (a class that does not exist, no default class).
STORAGE_CLASSES: Final = ResourceType("storage.k8s.io/v1", "StorageClass", "storageclasses", namespaced=False)

RELIST_DELAY_SECONDS: Final = 1.0
MAX_RELIST_DELAY_SECONDS: Final = 30.0
WATCH_TIMEOUT_SECONDS: Final = 300


def _pick(source: Mapping[str, Any] | None, keys: Iterable[str]) -> Json:
    source = source or {}
    return {k: source[k] for k in keys if k in source}


def _reduce_container(container: Mapping[str, Any]) -> Json:
    return _pick(container, ("name", "resources", "restartPolicy", "ports"))


def reduce_pod(pod: Json) -> Json:
    """A pod with only what capacity (node, GPU requests, phase) and status (readiness, waits) read."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _pick(
            meta, ("name", "namespace", "uid", "labels", "annotations", "deletionTimestamp", "ownerReferences")
        ),
        "spec": {
            "nodeName": spec.get("nodeName"),
            "containers": [_reduce_container(c) for c in spec.get("containers") or []],
            "initContainers": [_reduce_container(c) for c in spec.get("initContainers") or []],
        },
        "status": _pick(
            status,
            ("phase", "podIP", "podIPs", "startTime", "conditions", "containerStatuses", "initContainerStatuses"),
        ),
    }


def reduce_node(node: Json) -> Json:
    """A node with only what the GPU capacity check reads (labels, taints, cordon, allocatable, Ready)."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _pick(meta, ("name", "uid", "labels")),
        "spec": _pick(node.get("spec"), ("taints", "unschedulable")),
        "status": {
            "allocatable": status.get("allocatable") or {},
            "conditions": [_pick(c, ("type", "status")) for c in status.get("conditions") or []],
        },
    }


def reduce_storage_class(obj: Json) -> Json:
    """A StorageClass with what status reads: name, the default-class annotation, provisioner, binding mode."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "apiVersion": STORAGE_CLASSES.api_version,
        "kind": STORAGE_CLASSES.kind,
        "metadata": {"name": meta.get("name"), "annotations": _pick(annotations, DEFAULT_CLASS_ANNOTATIONS)},
        **_pick(obj, ("provisioner", "volumeBindingMode")),
    }


def _identity(obj: Json) -> Json:
    return obj


def _key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name"))


def _version(obj: Mapping[str, Any] | None) -> int | None:
    """An object's resourceVersion as a number, None when absent or not numeric (then it is never compared)."""
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


class StoreObserver(Protocol):
    """Told of every change of a store, under its lock: keeps a figure derived from all its objects current."""

    def changed(self, key: Key, old: Json | None, new: Json | None) -> None: ...


class Index:
    """The objects of a store grouped by a value computed from each (None: in no group).

    A reconcile reads its own pods and children out of thousands: a lookup by group costs the size of the
    group, not the size of the fleet.
    """

    def __init__(self, group_of: Callable[[Json], Hashable | None]) -> None:
        self._group_of = group_of
        self._groups: dict[Hashable, dict[Key, Json]] = {}

    def changed(self, key: Key, old: Json | None, new: Json | None) -> None:
        if old is not None:
            group = self._groups.get(self._group_of(old))
            if group is not None:
                group.pop(key, None)
                if not group:
                    del self._groups[self._group_of(old)]
        if new is not None:
            value = self._group_of(new)
            if value is not None:
                self._groups.setdefault(value, {})[key] = new

    def members(self, value: Hashable) -> list[Json]:
        return list((self._groups.get(value) or {}).values())


class Store:
    """A thread-safe map (namespace, name) -> object of one resource, as the last list + watch left it.

    `monotonic`: an upsert never replaces an object by an older version of it. The store of the CRs takes the
    reconcile's own status writes at once (as client-go's mutation cache does), so a reconcile that follows
    its own write reads what it wrote, not the previous status; a watch event from before that write, still
    on its way, must not undo it. (etcd's resourceVersions grow; where one is not a number, nothing is
    compared.)

    `index` groups the objects for `indexed` lookups; `observers` are told of every change (under the lock).
    `version` counts the changes: a reader that derived something from the store knows when to derive again.
    """

    def __init__(
        self,
        *,
        monotonic: bool = False,
        index: Index | None = None,
        observers: Iterable[StoreObserver] = (),
    ) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, Json] = {}
        self._monotonic = monotonic
        self._index = index
        self._observers: list[StoreObserver] = [*([index] if index is not None else []), *observers]
        self.version = 0

    def _changed(self, key: Key, old: Json | None, new: Json | None) -> None:
        self.version += 1
        for observer in self._observers:
            observer.changed(key, old, new)

    def replace(self, objects: Iterable[Json], namespace: str | None = None) -> None:
        """Replace every object (of `namespace` only, when given: one store may be fed per namespace)."""
        fresh = {_key_of(obj): obj for obj in objects}
        with self._lock:
            for key, gone in list(self._objects.items()):
                if (namespace is None or key[0] == namespace) and key not in fresh:
                    del self._objects[key]
                    self._changed(key, gone, None)
            for key, obj in fresh.items():
                stored = self._objects.get(key)
                self._objects[key] = obj
                self._changed(key, stored, obj)

    def upsert(self, obj: Json, *, only_if_present: bool = False) -> None:
        key = _key_of(obj)
        with self._lock:
            stored = self._objects.get(key)
            if only_if_present and stored is None:
                return  # deleted meanwhile: an answer to an earlier write must not bring it back
            if self._monotonic:
                stored_version, incoming = _version(stored), _version(obj)
                if stored_version is not None and incoming is not None and incoming < stored_version:
                    return
            self._objects[key] = obj
            self._changed(key, stored, obj)

    def get(self, namespace: str, name: str) -> Json | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def remove(self, obj: Mapping[str, Any]) -> None:
        key = _key_of(obj)
        with self._lock:
            old = self._objects.pop(key, None)
            if old is not None:
                self._changed(key, old, None)

    def items(self) -> list[Json]:
        with self._lock:
            return list(self._objects.values())

    def indexed(self, value: Hashable) -> list[Json]:
        """The objects the store's index groups under `value` (every object when the store has no index)."""
        with self._lock:
            if self._index is None:
                return list(self._objects.values())
            return self._index.members(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


@dataclass(frozen=True)
class WatchSpec:
    """What one reflector lists and watches (all namespaces)."""

    rtype: ResourceType
    namespace: str | None = None  # None: all namespaces
    label_selector: str | None = None
    field_selector: str | None = None
    reduce: Reducer = _identity


class Reflector:
    """Keeps a `Store` equal to the server's objects of one resource: LIST, then WATCH; LIST again when lost."""

    def __init__(self, kube: Kube, spec: WatchSpec, store: Store, on_change: OnChange | None = None) -> None:
        self.kube = kube
        self.spec = spec
        self.store = store
        self.synced = threading.Event()
        self._on_change = on_change
        self._stopping = threading.Event()
        self._response: Any = None  # the open watch, so that stop() can end a blocked read
        self._thread = threading.Thread(target=self._run, name=f"reflector-{spec.rtype.plural}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop the thread: the open watch is shut down and the thread joined."""
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed or never fully opened
                response.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)

    def _opened(self, response: Any) -> None:
        self._response = response

    def _run(self) -> None:
        delay = RELIST_DELAY_SECONDS
        while not self._stopping.is_set():
            try:
                version = self._list()
                self._watch(version)
                # Only a watch that ran to its end shows a healthy connection: a LIST that works followed by a
                # WATCH that is refused at once (a missing verb, say) must back off, not retry every second.
                delay = RELIST_DELAY_SECONDS
            except ApiError as error:
                if self._stopping.is_set():
                    return
                log.warning("watch of %s lost (%s); listing again in %.0fs", self.spec.rtype.plural, error, delay)
                self._stopping.wait(delay)
                delay = min(MAX_RELIST_DELAY_SECONDS, delay * 2)
            except Exception:  # a bug must not silently freeze the cache: log it and start over
                log.exception("reflector of %s failed; listing again", self.spec.rtype.plural)
                self._stopping.wait(delay)

    def _list(self) -> str:
        reduced: list[Json] = []
        version = ""
        for page, page_version in self.kube.list_pages(
            self.spec.rtype,
            self.spec.namespace,
            label_selector=self.spec.label_selector,
            field_selector=self.spec.field_selector,
        ):
            reduced.extend(self.spec.reduce(item) for item in page)  # each page reduced before the next
            version = page_version  # every page of one list carries the same snapshot version
        self.store.replace(reduced, self.spec.namespace)
        self.synced.set()
        for obj in reduced:
            self._notify("ADDED", obj)
        return version

    def _watch(self, version: str) -> None:
        while not self._stopping.is_set():
            for event in self.kube.watch(
                self.spec.rtype,
                version,
                self.spec.namespace,
                label_selector=self.spec.label_selector,
                field_selector=self.spec.field_selector,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                on_open=self._opened,
            ):
                if self._stopping.is_set():
                    return
                obj = event.get("object") or {}
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") == "BOOKMARK":
                    continue
                obj.setdefault("kind", self.spec.rtype.kind)
                obj.setdefault("apiVersion", self.spec.rtype.api_version)
                reduced = self.spec.reduce(obj)
                if event.get("type") == "DELETED":
                    self.store.remove(reduced)
                else:
                    self.store.upsert(reduced)
                self._notify(str(event.get("type")), reduced)

    def _notify(self, event_type: str, obj: Json) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(event_type, obj)
        except Exception:  # a consumer's bug must not kill the feed
            log.exception("cache consumer failed on %s", self.spec.rtype.plural)


@dataclass(frozen=True)
class CapacitySnapshot:
    """GPU nodes and active pods at one moment: what capacity arithmetic reads (shared by all readers).

    `gpus_used` (GPUs held per node) is kept by the cache as pods come and go; a snapshot made of listed
    objects counts it from `pods` once, when first read. Readers must not change the sequences.
    """

    nodes: Sequence[Json]
    pods: Sequence[Json]
    used: Mapping[str, int] | None = None

    @cached_property
    def gpus_used(self) -> Mapping[str, int]:
        return self.used if self.used is not None else capacity.gpus_in_use(self.pods)


def _is_active(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _bound_gpus(pod: Json) -> tuple[str, int] | None:
    """(node, GPUs) a pod holds: bound, not finished, and asking for GPUs (as `capacity.gpus_in_use` counts)."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or not _is_active(pod):
        return None
    try:
        gpus = capacity.pod_gpus(pod)
    except ValueError:  # a quantity the API server would not have admitted: counted as no GPU, as nowhere
        return None
    return (str(node), gpus) if gpus else None


class GpuUsage:
    """GPUs held per node by the cached pods, kept current at each pod change (a store observer).

    Counting 2,000 pods' GPU requests for every reconcile was most of an idle leader's CPU; a pod event now
    costs one pod's count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Key, tuple[str, int]] = {}
        self._per_node: dict[str, int] = {}

    def changed(self, key: Key, old: Json | None, new: Json | None) -> None:
        holding = _bound_gpus(new) if new is not None else None
        with self._lock:
            previous = self._held.pop(key, None)
            if previous is not None:
                node, gpus = previous
                left = self._per_node.get(node, 0) - gpus
                if left > 0:
                    self._per_node[node] = left
                else:
                    self._per_node.pop(node, None)
            if holding is not None:
                self._held[key] = holding
                self._per_node[holding[0]] = self._per_node.get(holding[0], 0) + holding[1]

    def per_node(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_node)


def _owner_label_group(obj: Json) -> Key | None:
    """(namespace, `gptoss.io/deployment` label): the group a CR's pods and children are read by."""
    meta = obj.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(names.LABEL_DEPLOYMENT)
    return (str(meta.get("namespace") or ""), str(owner)) if owner else None


def _owner_key(obj: Mapping[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == names.KIND and ref.get("controller"):
            return str(meta.get("namespace") or ""), str(ref.get("name"))
    return None


class ClusterCache:
    """The operator's watch-fed view of the cluster: its children by owner, GPU nodes, and pods."""

    def __init__(
        self,
        kube: Kube,
        child_kinds: Iterable[object],
        *,
        namespaces: Iterable[str] = (),
        on_owner_change: Callable[[str, str], None] | None = None,
        on_spec_change: Callable[[str, str], None] | None = None,
        cluster_wide_pods: bool = True,
    ) -> None:
        self._on_owner_change = on_owner_change
        self.cluster_wide_pods = cluster_wide_pods
        self._on_spec_change = on_spec_change or on_owner_change  # a new CR or a spec change (urgent)
        self._generations: dict[Key, object] = {}  # what a CR's last event showed of its spec and metadata
        self._generations_lock = threading.Lock()
        self.children: dict[str, Store] = {}
        # The GptOssDeployments themselves: the resync walks them, a reconcile reads its CR here (no GET).
        self.deployments = Store(monotonic=True)
        self.nodes = Store()
        self._gpu_usage = GpuUsage()
        self.pods = Store(index=Index(_owner_label_group), observers=[self._gpu_usage])
        self._snapshot: tuple[tuple[int, int], CapacitySnapshot] | None = None  # (store versions, snapshot)
        self._snapshot_lock = threading.Lock()
        self.storage_classes = Store()
        # Optional reads: status words are better with them, nothing waits for them (a 403 leaves them unsynced).
        self.optional_reflectors: list[Reflector] = [
            Reflector(kube, WatchSpec(STORAGE_CLASSES, reduce=reduce_storage_class), self.storage_classes)
        ]
        # Capacity needs every pod and GPU node of the cluster; CRs and children only the watched namespaces.
        # Without cluster-wide pod reads (a setting), only the operator's own pods, where it watches CRs.
        self.reflectors: list[Reflector] = [
            Reflector(kube, WatchSpec(NODES, label_selector=names.GPU_PRODUCT_LABEL, reduce=reduce_node), self.nodes),
        ]
        scopes: list[str | None] = list(namespaces) or [None]
        self._namespaces = frozenset(namespaces)  # empty: all
        pod_watches = [WatchSpec(PODS, reduce=reduce_pod)]
        if not cluster_wide_pods:
            pod_watches = [
                WatchSpec(PODS, ns, label_selector=names.LABEL_DEPLOYMENT, reduce=reduce_pod) for ns in scopes
            ]
        self.reflectors += [Reflector(kube, spec, self.pods, self._pod_changed) for spec in pod_watches]
        for namespace in scopes:
            spec = WatchSpec(GPTOSS, namespace)
            self.reflectors.append(Reflector(kube, spec, self.deployments, self._deployment_changed))
            for kind in child_kinds:
                rtype = resource_type(kind)
                store = self.children.setdefault(rtype.kind, Store(index=Index(_owner_label_group)))
                spec = WatchSpec(rtype, namespace, label_selector=names.LABEL_DEPLOYMENT)
                self.reflectors.append(Reflector(kube, spec, store, self._child_changed))

    def start(self) -> None:
        for reflector in [*self.reflectors, *self.optional_reflectors]:
            reflector.start()

    def stop(self) -> None:
        for reflector in [*self.reflectors, *self.optional_reflectors]:
            reflector.stop()

    def wait_synced(self, timeout_seconds: float) -> bool:
        """Whether every store has been listed once within `timeout_seconds`."""
        return all(reflector.synced.wait(timeout_seconds) for reflector in self.reflectors)

    @property
    def synced(self) -> bool:
        return all(reflector.synced.is_set() for reflector in self.reflectors)

    # ----------------------------------------------------------------------------------- reads
    def children_of(self, namespace: str, owner_name: str) -> dict[tuple[str, str], Json]:
        """The owner's children by (kind, name): those labelled with its name in its namespace."""
        found: dict[tuple[str, str], Json] = {}
        for store in self.children.values():
            for obj in store.indexed((namespace, owner_name)):
                meta = obj.get("metadata") or {}
                labels = meta.get("labels") or {}
                if meta.get("namespace") == namespace and labels.get(names.LABEL_DEPLOYMENT) == owner_name:
                    found[object_key(obj)] = obj
        return found

    def storage_class_list(self) -> list[Json] | None:
        """The cluster's StorageClasses (reduced), or None until they have been listed (or when not readable)."""
        if not all(reflector.synced.is_set() for reflector in self.optional_reflectors):
            return None
        return self.storage_classes.items()

    def pods_labelled(self, namespace: str, labels: Mapping[str, str]) -> list[Json]:
        """Pods in `namespace` carrying every one of `labels`, finished ones included (their exit tells why)."""
        owner = labels.get(names.LABEL_DEPLOYMENT)
        candidates = self.pods.indexed((namespace, owner)) if owner else self.pods.items()
        return [
            pod
            for pod in candidates
            if (pod.get("metadata") or {}).get("namespace") == namespace
            and all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def deployment(self, namespace: str, name: str) -> Json | None:
        """One GptOssDeployment as last seen (a copy: the caller may change it), None when absent."""
        found = self.deployments.get(namespace, name)
        return copy.deepcopy(found) if found is not None else None

    def remember_written(self, obj: Json) -> None:
        """The server's answer to our own write of a CR: visible to the next reconcile before its watch echo."""
        if (obj.get("metadata") or {}).get("name") and obj.get("kind") == GPTOSS.kind:
            self.deployments.upsert(obj, only_if_present=True)

    def deployment_keys(self) -> list[Key]:
        """(namespace, name) of every GptOssDeployment in the watched namespaces."""
        return [_key_of(obj) for obj in self.deployments.items()]

    def snapshot(self) -> CapacitySnapshot:
        """GPU nodes, active pods (all namespaces) and GPUs held per node, as of now.

        Made again only after a node or pod changed: an idle fleet's reconciles and autoscaler rounds share one.
        """
        versions = (self.nodes.version, self.pods.version)  # read first: a change after it makes the next one
        with self._snapshot_lock:
            if self._snapshot is not None and self._snapshot[0] == versions:
                return self._snapshot[1]
            made = CapacitySnapshot(
                tuple(self.nodes.items()),
                tuple(p for p in self.pods.items() if _is_active(p)),
                self._gpu_usage.per_node(),
            )
            self._snapshot = (versions, made)
            return made

    def pods_of(self, namespace: str, labels: Mapping[str, str]) -> list[Json]:
        """Active pods in `namespace` carrying every one of `labels`."""
        return [pod for pod in self.pods_labelled(namespace, labels) if _is_active(pod)]

    # --------------------------------------------------------------------------------- triggers
    def _deployment_changed(self, event: str, obj: Json) -> None:
        """A CR event triggers its reconcile unless only its status changed (our own writes echo back)."""
        key = _key_of(obj)
        meta = obj.get("metadata") or {}
        seen = (meta.get("generation"), meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"))
        with self._generations_lock:
            if event == "DELETED":
                self._generations.pop(key, None)
            elif self._generations.get(key) == seen:
                return
            else:
                self._generations[key] = seen
        # Urgent only when the CR waits for work: new, or a spec its status has not caught up with. A new
        # leader's first list sees every CR: those already reconciled must not crowd out the one that waits.
        status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
        waiting = event != "DELETED" and (status or {}).get("observedGeneration") != meta.get("generation")
        callback = self._on_spec_change if waiting else self._on_owner_change
        if callback is not None:
            callback(*key)

    def _child_changed(self, _event: str, obj: Json) -> None:
        owner = _owner_key(obj)
        if owner is not None and self._on_owner_change is not None:
            self._on_owner_change(*owner)

    def _pod_changed(self, _event: str, pod: Json) -> None:
        # A server pod's readiness is status: its owner's reconcile recomputes it.
        labels = (pod.get("metadata") or {}).get("labels") or {}
        owner = labels.get(names.LABEL_DEPLOYMENT)
        namespace = (pod.get("metadata") or {}).get("namespace")
        if self._namespaces and namespace not in self._namespaces:
            return  # pods are watched cluster-wide for capacity; another operator owns these CRs
        if owner and namespace and self._on_owner_change is not None:
            self._on_owner_change(str(namespace), str(owner))
