"""How many replicas the cluster can really schedule (pure, over node and pod dicts as the API returns them).

The dicts are the API server's JSON (camelCase keys: `spec.nodeName`, `status.allocatable`), e.g. a raw
list response or `ApiClient().sanitize_for_serialization(obj)`; the Kubernetes client's `to_dict()` uses
snake_case attribute names and does not fit.

A replica needs `gpus_per_replica` GPUs on one node (a TP2 replica never splits across nodes). A node
counts when the deployment's pods could land there: it carries the GPU product, matches the node selector
and the required node affinity, its NoSchedule/NoExecute taints are tolerated, and it is Ready and not
cordoned. Its free GPUs are its allocatable `nvidia.com/gpu` minus what the non-terminated pods bound to
it request (init containers included, as the scheduler counts them).

`replicas_that_fit` answers "replicas already placed + replicas that fit on free GPUs": the deployment's
own bound pods keep their GPUs (they are in the node's used count and in `placed`), and every free slot of
`gpus_per_replica` on an eligible node is one more. Pending own pods hold no GPU yet: they compete for the
same free slots, so they are not added to `placed`.

The scheduler remains the final judge (CPU, memory, pod affinity and topology spread are not modelled);
this is the GPU arithmetic, which is what runs out first for these pods.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from gptoss_operator.names import GPU_PRODUCT_LABEL, GPU_RESOURCE

JsonObject = Mapping[str, Any]

_TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
_BLOCKING_TAINT_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
_DECIMAL_SUFFIXES = {"": 0, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<exponent>[eE][+-]?[0-9]+)?"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?"
)


@dataclass(frozen=True)
class Placement:
    """Where the deployment's server pods may run and how to recognise them."""

    gpus_per_replica: int
    gpu_product: str | None = None  # the node label nvidia.com/gpu.product must equal it (None: any)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[JsonObject] = ()
    required_node_affinity: JsonObject | None = None  # a core/v1 NodeSelector: {"nodeSelectorTerms": [...]}
    own_pod_labels: Mapping[str, str] = field(default_factory=dict)  # labels every own server pod carries

    def __post_init__(self) -> None:
        if self.gpus_per_replica < 1:
            raise ValueError(f"gpus_per_replica must be >= 1, got {self.gpus_per_replica}")

    @classmethod
    def from_pod_spec(
        cls,
        pod_spec: JsonObject,
        *,
        gpus_per_replica: int,
        own_pod_labels: Mapping[str, str],
        gpu_product: str | None = None,
    ) -> Placement:
        """The constraints of a built pod template's spec (camelCase, as the builders emit it)."""
        affinity = pod_spec.get("affinity") or {}
        node_affinity = affinity.get("nodeAffinity") or {}
        return cls(
            gpus_per_replica=gpus_per_replica,
            gpu_product=gpu_product,
            node_selector=dict(pod_spec.get("nodeSelector") or {}),
            tolerations=tuple(pod_spec.get("tolerations") or ()),
            required_node_affinity=node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"),
            own_pod_labels=dict(own_pod_labels),
        )


@dataclass(frozen=True)
class NodeGpus:
    """An eligible node's GPUs."""

    name: str
    allocatable: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.allocatable - self.used)


@dataclass(frozen=True)
class Fit:
    """Replicas the cluster can hold: `placed` own replicas on nodes plus `additional` on free GPUs."""

    gpus_per_replica: int
    placed: int
    additional: int
    nodes: tuple[NodeGpus, ...] = ()  # eligible nodes
    excluded: Mapping[str, str] = field(default_factory=dict)  # node name -> why it does not count

    @property
    def total(self) -> int:
        return self.placed + self.additional

    @property
    def free_gpus(self) -> int:
        return sum(node.free for node in self.nodes)


class Cap(NamedTuple):
    replicas: int
    limited: bool
    message: str


# ------------------------------------------------------------------------------------------ quantities
def parse_quantity(value: object) -> Decimal:
    """A Kubernetes resource quantity ("2", "500m", "1Gi", "1e3", 2) as a Decimal; ValueError if invalid."""
    if isinstance(value, bool):
        raise ValueError(f"not a resource quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a resource quantity: {value!r}")
    number, exponent, suffix = match.group("number", "exponent", "suffix")
    result = Decimal(number) * (Decimal(10) ** int(exponent[1:])) if exponent else Decimal(number)
    if suffix in _BINARY_SUFFIXES:
        return result * (Decimal(2) ** _BINARY_SUFFIXES[suffix])
    return result * (Decimal(10) ** _DECIMAL_SUFFIXES[suffix or ""])


def _gpus(resources: JsonObject | None, key: str) -> Decimal | None:
    if not resources:
        return None
    amounts = resources.get(key) or {}
    return parse_quantity(amounts[GPU_RESOURCE]) if GPU_RESOURCE in amounts else None


def container_gpus(container: JsonObject) -> Decimal:
    """GPUs one container asks for: its request, else its limit (requests default to limits)."""
    resources = container.get("resources") or {}
    request = _gpus(resources, "requests")
    if request is not None:
        return request
    limit = _gpus(resources, "limits")
    return limit if limit is not None else Decimal(0)


def pod_gpus(pod: JsonObject) -> int:
    """GPUs a pod holds, as the scheduler counts them: max(any init container's need, the running sum).

    Sidecars (init containers with restartPolicy Always) keep running: they add to the containers' sum
    and to the need of every init container that starts after them.
    """
    spec = pod.get("spec") or {}
    sidecars = Decimal(0)
    init_peak = Decimal(0)
    for init in spec.get("initContainers") or ():
        need = container_gpus(init)
        if init.get("restartPolicy") == "Always":
            sidecars += need
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + need)
    running = sidecars + sum((container_gpus(c) for c in spec.get("containers") or ()), Decimal(0))
    return math.ceil(max(init_peak, running))


def gpus_in_use(pods: Iterable[JsonObject]) -> dict[str, int]:
    """GPUs held per node by the non-terminated pods bound to it."""
    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or _terminated(pod):
            continue
        gpus = pod_gpus(pod)
        if gpus:
            used[node] = used.get(node, 0) + gpus
    return used


def _terminated(pod: JsonObject) -> bool:
    return (pod.get("status") or {}).get("phase") in _TERMINATED_PHASES


# ------------------------------------------------------------------------------- taints and tolerations
def tolerates(toleration: JsonObject, taint: JsonObject) -> bool:
    """Kubernetes' ToleratesTaint: effect (empty matches all), key (empty + Exists matches all), value."""
    effect = toleration.get("effect") or ""
    if effect and effect != (taint.get("effect") or ""):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"  # an empty key is only valid (and matches every key) with Exists
    if key != (taint.get("key") or ""):
        return False
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taints(node: JsonObject, tolerations: Sequence[JsonObject]) -> list[str]:
    """The node's NoSchedule/NoExecute taints that no toleration matches, as key=value:effect."""
    blocking: list[str] = []
    for taint in (node.get("spec") or {}).get("taints") or ():
        if taint.get("effect") not in _BLOCKING_TAINT_EFFECTS:
            continue  # PreferNoSchedule only steers the scheduler
        if not any(tolerates(t, taint) for t in tolerations):
            value = f"={taint['value']}" if taint.get("value") else ""
            blocking.append(f"{taint.get('key', '')}{value}:{taint.get('effect')}")
    return blocking


# ---------------------------------------------------------------------------------------- node affinity
def matches_requirement(values_on_node: Mapping[str, str], requirement: JsonObject) -> bool:
    """One NodeSelectorRequirement (In, NotIn, Exists, DoesNotExist, Gt, Lt) against labels or fields."""
    key = requirement.get("key", "")
    operator = requirement.get("operator")
    values = list(requirement.get("values") or ())
    present = key in values_on_node
    actual = values_on_node.get(key)
    if operator == "In":
        return present and actual in values
    if operator == "NotIn":
        return not present or actual not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            label_number, bound = int(str(actual)), int(str(values[0]))
        except ValueError:
            return False
        return label_number > bound if operator == "Gt" else label_number < bound
    return False  # an unknown operator matches nothing, as the API server would reject it


def matches_term(node: JsonObject, term: JsonObject) -> bool:
    """A NodeSelectorTerm: all its matchExpressions and matchFields hold; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False
    labels = _labels(node)
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
    return all(matches_requirement(labels, e) for e in expressions) and all(
        matches_requirement(node_fields, f) for f in fields
    )


def matches_node_selector(node: JsonObject, node_selector: JsonObject | None) -> bool:
    """A core/v1 NodeSelector (required node affinity): any term matches. None places no constraint."""
    if node_selector is None:
        return True
    return any(matches_term(node, term) for term in node_selector.get("nodeSelectorTerms") or ())


# ----------------------------------------------------------------------------------------------- nodes
def _labels(node: JsonObject) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _node_ready(node: JsonObject) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def allocatable_gpus(node: JsonObject) -> int:
    amount = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE)
    return 0 if amount is None else math.floor(parse_quantity(amount))


def exclusion_reason(node: JsonObject, placement: Placement) -> str | None:
    """Why the deployment's pods cannot use this node (None when they can)."""
    labels = _labels(node)
    if allocatable_gpus(node) == 0:
        return f"no allocatable {GPU_RESOURCE}"
    if placement.gpu_product is not None and labels.get(GPU_PRODUCT_LABEL) != placement.gpu_product:
        found = labels.get(GPU_PRODUCT_LABEL, "no label")
        return f"{GPU_PRODUCT_LABEL} is {found}, not {placement.gpu_product}"
    mismatched = [k for k, v in placement.node_selector.items() if labels.get(k) != v]
    if mismatched:
        return f"node selector {', '.join(f'{k}={placement.node_selector[k]}' for k in mismatched)} not matched"
    if not matches_node_selector(node, placement.required_node_affinity):
        return "required node affinity not matched"
    if (node.get("spec") or {}).get("unschedulable"):
        return "cordoned (unschedulable)"
    if not _node_ready(node):
        return "not Ready"
    taints = untolerated_taints(node, placement.tolerations)
    if taints:
        return f"taint {', '.join(taints)} not tolerated"
    return None


def _own(pod: JsonObject, own_labels: Mapping[str, str]) -> bool:
    if not own_labels:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in own_labels.items())


def replicas_that_fit(
    nodes: Iterable[JsonObject],
    pods: Iterable[JsonObject],
    placement: Placement,
    *,
    used: Mapping[str, int] | None = None,
) -> Fit:
    """Own replicas already bound to a node plus the replicas that fit on free GPUs of eligible nodes.

    `pods` are all pods the API lists (every namespace: other tenants' GPUs are just as taken). An own
    pod being deleted still holds its GPUs but is not counted as placed: it is on its way out.
    `used`: the GPUs held per node (`gpus_in_use` of every pod) when the caller keeps that count; `pods`
    then need only hold the deployment's own pods (the count of 2,000 pods is not made again per reader).
    """
    pod_list = list(pods)
    if used is None:
        used = gpus_in_use(pod_list)
    eligible: list[NodeGpus] = []
    excluded: dict[str, str] = {}
    for node in nodes:
        name = (node.get("metadata") or {}).get("name", "")
        reason = exclusion_reason(node, placement)
        if reason is None:
            eligible.append(NodeGpus(name, allocatable_gpus(node), used.get(name, 0)))
        elif allocatable_gpus(node) > 0:
            excluded[name] = reason  # nodes without GPUs are not worth a word
    placed = sum(
        1
        for pod in pod_list
        if _own(pod, placement.own_pod_labels)
        and (pod.get("spec") or {}).get("nodeName")
        and not _terminated(pod)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )
    additional = sum(node.free // placement.gpus_per_replica for node in eligible)
    return Fit(placement.gpus_per_replica, placed, additional, tuple(eligible), excluded)


def cap(desired: int, current: int, fit: Fit) -> Cap:
    """Limit a scale-up to what fits; scale-down and steady decisions pass unchanged.

    Never below `current`: capacity is a reason not to grow, not a reason to shrink.
    """
    if desired <= current or desired <= fit.total:
        return Cap(desired, False, "")
    capped = max(current, fit.total)
    per = fit.gpus_per_replica
    free = ", ".join(f"{n.name}: {n.free}" for n in fit.nodes if n.free) or "none"
    message = (
        f"wanted {desired} replicas ({desired * per} GPUs at {per} per replica) but only {fit.total} fit: "
        f"{fit.placed} placed + {fit.additional} more on free GPUs of {len(fit.nodes)} matching node"
        f"{'s' if len(fit.nodes) != 1 else ''} (free: {free}); staying at {capped}"
    )
    if fit.excluded:
        shown = list(fit.excluded.items())[:3]
        more = f" and {len(fit.excluded) - 3} more" if len(fit.excluded) > 3 else ""
        message += "; GPU nodes not matching: " + "; ".join(f"{n} ({why})" for n, why in shown) + more
    return Cap(capped, True, message)
