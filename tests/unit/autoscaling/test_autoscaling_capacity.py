"""Free GPUs, replicas that fit and the cap, over node and pod dicts shaped as the API returns them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gptoss_operator.autoscaling.capacity import (
    Placement,
    cap,
    exclusion_reason,
    gpus_in_use,
    matches_node_selector,
    matches_requirement,
    parse_quantity,
    pod_gpus,
    replicas_that_fit,
    tolerates,
)

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
OWN = {"app.kubernetes.io/instance": "chat", "app.kubernetes.io/component": "server"}


def node(
    name: str,
    gpus: int | str = 8,
    *,
    product: str = H100,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: str = "True",
    unschedulable: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, **(labels or {})}},
        "spec": {"taints": [GPU_TAINT] if taints is None else taints, "unschedulable": unschedulable},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96"},
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
        },
    }


def pod(
    node_name: str | None,
    gpus: int = 1,
    *,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    deleting: bool = False,
    use_limits: bool = False,
) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if use_limits else {"requests": {"nvidia.com/gpu": gpus}}
    metadata: dict[str, Any] = {"name": "p", "labels": labels or {}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-25T08:00:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


PLACEMENT = Placement(gpus_per_replica=1, gpu_product=H100, tolerations=(GPU_TOLERATION,), own_pod_labels=OWN)


# ------------------------------------------------------------------------------------------ tolerations
@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        (
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
            GPU_TAINT | {"key": "k", "value": "v"},
            True,
        ),
        ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),  # Equal is the default
        ({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
        ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),  # any effect
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoSchedule"}, False),
        ({"operator": "Exists"}, {"key": "anything", "value": "x", "effect": "NoSchedule"}, True),  # empty key
        ({"operator": "Exists", "effect": "NoSchedule"}, {"key": "x", "effect": "NoExecute"}, False),
        ({"operator": "Equal", "value": ""}, {"key": "x", "effect": "NoSchedule"}, False),  # empty key needs Exists
        ({"key": "other", "operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, False),
        ({"key": "k", "operator": "Equal"}, {"key": "k", "effect": "NoSchedule"}, True),  # both values empty
        ({"key": "k", "operator": "Bogus"}, {"key": "k", "effect": "NoSchedule"}, False),
    ],
)
def test_toleration_matching(toleration: dict[str, str], taint: dict[str, str], expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


# ---------------------------------------------------------------------------------------- node affinity
LABELS = {"zone": "a", "gpus": "8", "pool": "inference"}


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, True),
        ({"key": "zone", "operator": "In", "values": ["b"]}, False),
        ({"key": "missing", "operator": "In", "values": ["a"]}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["b"]}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, False),
        ({"key": "missing", "operator": "NotIn", "values": ["a"]}, True),  # absent label is not in the set
        ({"key": "pool", "operator": "Exists"}, True),
        ({"key": "missing", "operator": "Exists"}, False),
        ({"key": "missing", "operator": "DoesNotExist"}, True),
        ({"key": "pool", "operator": "DoesNotExist"}, False),
        ({"key": "gpus", "operator": "Gt", "values": ["4"]}, True),
        ({"key": "gpus", "operator": "Gt", "values": ["8"]}, False),
        ({"key": "gpus", "operator": "Lt", "values": ["9"]}, True),
        ({"key": "zone", "operator": "Gt", "values": ["1"]}, False),  # not a number
        ({"key": "missing", "operator": "Lt", "values": ["1"]}, False),
        ({"key": "gpus", "operator": "Gt", "values": ["1", "2"]}, False),  # Gt takes exactly one value
    ],
)
def test_node_selector_requirements(requirement: dict[str, Any], expected: bool) -> None:
    assert matches_requirement(LABELS, requirement) is expected


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def terms(*term_list: dict[str, Any]) -> dict[str, Any]:
    return {"nodeSelectorTerms": list(term_list)}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, True),
        (terms(), False),  # no terms match nothing
        (terms({}), False),  # an empty term matches nothing
        (terms({"matchExpressions": [expr("zone", "In", "b")]}, {"matchExpressions": [expr("pool", "Exists")]}), True),
        (terms({"matchExpressions": [expr("zone", "In", "a"), expr("pool", "DoesNotExist")]}), False),  # AND
        (terms({"matchFields": [expr("metadata.name", "In", "n1")]}), True),
        (terms({"matchFields": [expr("metadata.name", "NotIn", "n1")]}), False),
    ],
)
def test_required_node_affinity(selector: dict[str, Any] | None, expected: bool) -> None:
    assert matches_node_selector(node("n1", labels=LABELS), selector) is expected


# ---------------------------------------------------------------------------------------- node choice
@pytest.mark.parametrize(
    ("the_node", "placement", "reason"),
    [
        (node("n"), PLACEMENT, None),
        (node("n", product="NVIDIA-A100-SXM4-80GB"), PLACEMENT, "nvidia.com/gpu.product is NVIDIA-A100"),
        (node("n", gpus=0), PLACEMENT, "no allocatable nvidia.com/gpu"),
        (node("n", ready="False"), PLACEMENT, "not Ready"),
        (node("n", ready="Unknown"), PLACEMENT, "not Ready"),
        (node("n", unschedulable=True), PLACEMENT, "cordoned"),
        (node("n"), Placement(1, gpu_product=H100), "taint nvidia.com/gpu=present:NoSchedule not tolerated"),
        (node("n", taints=[{"key": "x", "effect": "PreferNoSchedule"}]), Placement(1), None),  # only a preference
        (node("n", taints=[GPU_TAINT, {"key": "maint", "effect": "NoExecute"}]), PLACEMENT, "maint:NoExecute"),
        (node("n"), Placement(1, tolerations=(GPU_TOLERATION,), node_selector={"pool": "x"}), "pool=x not matched"),
        (
            node("n"),
            Placement(1, tolerations=(GPU_TOLERATION,), required_node_affinity={"nodeSelectorTerms": []}),
            "required node affinity",
        ),
        (node("n", product="NVIDIA-H200"), Placement(1, tolerations=(GPU_TOLERATION,)), None),  # any product
    ],
)
def test_exclusion_reasons(the_node: dict[str, Any], placement: Placement, reason: str | None) -> None:
    result = exclusion_reason(the_node, placement)
    if reason is None:
        assert result is None
    else:
        assert result is not None
        assert reason in result


# ------------------------------------------------------------------------------------------- counting
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}}]}, 2),
        ({"containers": [{"resources": {"limits": {"nvidia.com/gpu": 2}}}]}, 2),  # limits only
        ({"containers": [{"resources": {}}, {}]}, 0),
        (
            {
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}] * 2,
                "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            },
            2,  # max(init 1, containers 1 + 1)
        ),
        (
            {
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}],
            },
            4,  # an init container that needs more than the app holds the node's GPUs while it runs
        ),
        (
            {
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                "initContainers": [
                    {"restartPolicy": "Always", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                    {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
                ],
            },
            3,  # sidecar 1 keeps running while the second init container needs 2
        ),
    ],
)
def test_pod_gpus(spec: dict[str, Any], expected: int) -> None:
    assert pod_gpus({"spec": spec}) == expected


def test_gpus_in_use_skips_terminated_and_unbound_pods() -> None:
    pods = [
        pod("n1", 2),
        pod("n1", 1, use_limits=True),
        pod("n1", 4, phase="Succeeded"),
        pod("n1", 4, phase="Failed"),
        pod(None, 8, phase="Pending"),
        pod("n2", 1, phase="Pending"),  # bound, not yet running: holds its GPU
        pod("n2", 1, deleting=True),  # terminating: still holds its GPU
    ]
    assert gpus_in_use(pods) == {"n1": 3, "n2": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", Decimal(2)), (3, Decimal(3)), ("500m", Decimal("0.5")), ("1Ki", Decimal(1024)), ("1e3", Decimal(1000))],
)
def test_parse_quantity(value: object, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", ["", "two", "1.2.3", "5Q", True, None])
def test_parse_quantity_rejects_nonsense(value: object) -> None:
    with pytest.raises(ValueError, match="not a resource quantity"):
        parse_quantity(value)


# ---------------------------------------------------------------------------------- replicas that fit
def test_fit_counts_placed_plus_free_slots_per_node() -> None:
    nodes = [node("n1", 8), node("n2", 8), node("a100", 8, product="NVIDIA-A100-SXM4-80GB"), node("cpu", 0)]
    pods = [
        pod("n1", 1, labels=OWN),
        pod("n1", 1, labels=OWN),
        pod("n1", 5),  # another tenant
        pod("n2", 7),
        pod(None, 1, labels=OWN, phase="Pending"),  # own pending: competes for the free slots
        pod("n2", 1, labels=OWN, deleting=True),  # own, on its way out: holds a GPU, not placed
    ]
    fit = replicas_that_fit(nodes, pods, PLACEMENT)
    assert fit.placed == 2
    assert [(n.name, n.free) for n in fit.nodes] == [("n1", 1), ("n2", 0)]
    assert fit.additional == 1
    assert fit.total == 3
    assert set(fit.excluded) == {"a100"}  # the CPU node is not worth a word


@pytest.mark.parametrize(
    ("free_per_node", "gpus_per_replica", "additional"),
    [
        ((3, 3), 2, 2),  # 1 + 1: a TP2 replica never splits across nodes, so 2 GPUs are stranded
        ((4, 1), 2, 2),
        ((1, 1, 1), 2, 0),
        ((8,), 1, 8),
    ],
)
def test_replicas_never_split_across_nodes(
    free_per_node: tuple[int, ...], gpus_per_replica: int, additional: int
) -> None:
    nodes = [node(f"n{i}", free) for i, free in enumerate(free_per_node)]
    placement = Placement(gpus_per_replica, gpu_product=H100, tolerations=(GPU_TOLERATION,), own_pod_labels=OWN)
    assert replicas_that_fit(nodes, [], placement).additional == additional


def test_placement_from_pod_spec() -> None:
    spec = {
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [GPU_TOLERATION],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100]}]}
                    ]
                }
            }
        },
    }
    placement = Placement.from_pod_spec(spec, gpus_per_replica=2, own_pod_labels=OWN)
    nodes = [node("good", 4, labels={"pool": "gpu"}), node("h200", 4, product="NVIDIA-H200", labels={"pool": "gpu"})]
    fit = replicas_that_fit(nodes, [], placement)
    assert fit.additional == 2
    assert fit.excluded == {"h200": "required node affinity not matched"}


def test_placement_rejects_zero_gpus() -> None:
    with pytest.raises(ValueError, match="gpus_per_replica"):
        Placement(gpus_per_replica=0)


# ------------------------------------------------------------------------------------------------- cap
def fit_of(placed: int, free: tuple[int, ...], gpus_per_replica: int = 1) -> Any:
    nodes = [node(f"n{i}", f) for i, f in enumerate(free)]
    pods = [pod("n0", 0, labels=OWN) for _ in range(placed)]
    placement = Placement(gpus_per_replica, gpu_product=H100, tolerations=(GPU_TOLERATION,), own_pod_labels=OWN)
    return replicas_that_fit(nodes, pods, placement)


@pytest.mark.parametrize(
    ("desired", "current", "placed", "free", "expected", "limited"),
    [
        (5, 3, 3, (2,), 5, False),  # exactly fits
        (6, 3, 3, (2,), 5, True),  # one too many
        (2, 3, 3, (0,), 2, False),  # scale-down is never capped
        (3, 3, 3, (0,), 3, False),  # steady
        (6, 4, 3, (0,), 4, True),  # fits fewer than current (a pending pod): stay, never shrink for capacity
    ],
)
def test_cap(desired: int, current: int, placed: int, free: tuple[int, ...], expected: int, limited: bool) -> None:
    result = cap(desired, current, fit_of(placed, free))
    assert (result.replicas, result.limited) == (expected, limited)
    assert bool(result.message) is limited


def test_cap_message_has_the_numbers() -> None:
    nodes = [node("n1", 4), node("n2", 8, product="NVIDIA-A100-SXM4-80GB")]
    pods = [pod("n1", 2, labels=OWN), pod("n1", 1)]
    placement = Placement(2, gpu_product=H100, tolerations=(GPU_TOLERATION,), own_pod_labels=OWN)
    fit = replicas_that_fit(nodes, pods, placement)
    result = cap(4, 1, fit)
    assert result == (
        1,
        True,
        "wanted 4 replicas (8 GPUs at 2 per replica) but only 1 fit: 1 placed + 0 more on free GPUs of 1 "
        "matching node (free: n1: 1); staying at 1; GPU nodes not matching: n2 (nvidia.com/gpu.product is "
        "NVIDIA-A100-SXM4-80GB, not NVIDIA-H100-80GB-HBM3)",
    )
