"""Table tests of the pure status computation."""

from __future__ import annotations

from typing import Any

import pytest

from gptoss_operator import names, status, status_ownership
from gptoss_operator.status import Capacity, Observation
from gptoss_runtime.plan import EngineSettings, KvBudget, ServingPlan

NOW = "2026-11-25T10:00:00Z"
LATER = "2026-11-25T10:05:00Z"
TEMPLATE = {names.ANNOTATION_GENERATION: "3", names.ANNOTATION_PLAN_HASH: "abc"}


def applied_fields(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What the reconcile's server-side apply of `new` states over the live `previous` status."""
    return status_ownership.reconcile_fields(
        previous, new, owned_keys=status.OWNED_KEYS, owned_conditions=status.OWNED_CONDITIONS
    )


def would_write(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the reconcile would apply status at all (an unchanged resync writes nothing)."""
    live = status_ownership.live_fields(previous, keys=status.OWNED_KEYS, owned_conditions=status.OWNED_CONDITIONS)
    return not status_ownership.same_fields(applied_fields(previous, new), live)


def make_plan(gpus: int = 1, openai: bool = True) -> ServingPlan:
    return ServingPlan(
        model="gpt-oss-20b",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpus_per_replica=gpus,
        engine=EngineSettings(
            tensor_parallel_size=gpus,
            moe_expert_parallel_size=gpus,
            moe_backend="TRITON",
            attention_data_parallel=False,
            max_seq_len=131072,
            max_batch_size=64,
            max_num_tokens=20000,
            kv_cache_free_memory_fraction=0.85,
            kv_cache_dtype="auto",
            cuda_graph_batch_sizes=(1, 2, 4),
        ),
        kv_budget=KvBudget(
            gpu_memory_gib=80.0,
            weights_gib=13.0,
            activation_headroom_gib=6.0,
            kv_cache_gib=50.0,
            kv_bytes_per_token=49152,
            kv_cache_tokens=1000000,
            max_concurrent_sequences=8,
        ),
        openai_endpoint=openai,
    )


def pod(
    name: str,
    *,
    ready: bool = True,
    current: bool = True,
    node: str | None = "gpu-0",
    waiting: str | None = None,
    terminating: bool = False,
) -> dict[str, Any]:
    annotations = dict(TEMPLATE) if current else {names.ANNOTATION_GENERATION: "2", names.ANNOTATION_PLAN_HASH: "old"}
    meta: dict[str, Any] = {"name": name, "annotations": annotations}
    if terminating:
        meta["deletionTimestamp"] = NOW
    container: dict[str, Any] = {"name": "server", "state": {"running": {}}}
    if waiting:
        container["state"] = {"waiting": {"reason": waiting}}
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": "Running" if node else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [container],
        },
    }


def deployment(
    generation: int = 5,
    observed: int = 5,
    conditions: list[dict[str, Any]] | None = None,
    pods: list[dict[str, Any]] | None = None,
    **counts: int,
) -> dict[str, Any]:
    """A live Deployment whose status counts follow `pods` (as the controller would report them)."""
    pods = pods or []
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "conditions": conditions or [],
        "replicas": len(pods),
        "updatedReplicas": sum(1 for p in pods if p["metadata"]["annotations"] == TEMPLATE),
        "readyReplicas": sum(1 for p in pods if p["status"]["conditions"][0]["status"] == "True"),
    }
    status.update(counts)
    return {"metadata": {"name": "demo", "generation": generation}, "status": status}


def capacity(fit: int = 4, scheduled: int = 0, nodes: int = 2, free: int = 8, gpus: int = 1) -> Capacity:
    return Capacity(
        product="NVIDIA-H100-80GB-HBM3",
        gpus_per_replica=gpus,
        nodes=nodes,
        free_gpus=free,
        replicas_that_fit=fit,
        scheduled_replicas=scheduled,
    )


def observe(**overrides: Any) -> Observation:
    values: dict[str, Any] = {
        "generation": 3,
        "desired_replicas": 2,
        "selector": "app.kubernetes.io/instance=demo,app.kubernetes.io/component=server",
        "service_name": "demo",
        "template_annotations": TEMPLATE,
        "pods": [pod("a"), pod("b")],
        "capacity": capacity(scheduled=2),
    }
    values.update(overrides)
    values.setdefault("deployment", deployment(pods=values["pods"]))
    return Observation(**values)


def compute(obs: Observation, previous: dict[str, Any] | None = None, now: str = NOW, **kw: Any) -> dict[str, Any]:
    return status.compute_status(
        obs, kw.get("plan", make_plan()), previous, namespace="team", cluster_domain="cluster.local", now=now
    )


def cond(result: dict[str, Any], type_: str) -> dict[str, Any]:
    found = status.condition_of(result, type_)
    assert found is not None, f"no {type_} condition in {result['conditions']}"
    return dict(found)


# ------------------------------------------------------------------------------------------- table
CASES: list[tuple[str, Observation, str, str, str]] = [
    # id, observation, phase, Ready status, Ready reason
    ("all current pods ready", observe(), "Ready", "True", "ReplicasReady"),
    ("one of two ready", observe(pods=[pod("a"), pod("b", ready=False)]), "Progressing", "False", "ReplicasNotReady"),
    (
        "old generation pods do not count",
        observe(pods=[pod("a", current=False), pod("b", current=False)]),
        "Progressing",
        "False",
        "ReplicasNotReady",
    ),
    (
        "deployment controller has not seen the new spec",
        observe(deployment=deployment(generation=6, observed=5, pods=[pod("a"), pod("b")])),
        "Progressing",
        "False",
        "ReplicasNotReady",
    ),
    (
        "terminating pods are ignored",
        observe(pods=[pod("a"), pod("b", terminating=True)]),
        "Progressing",
        "False",
        "ReplicasNotReady",
    ),
    (
        "no GPUs: pods pending",
        observe(
            pods=[pod("a", ready=False, node=None), pod("b", ready=False, node=None)],
            capacity=capacity(fit=0, scheduled=0, free=0),
        ),
        "Pending",
        "False",
        "InsufficientCapacity",
    ),
    (
        "crash loop is degraded",
        observe(pods=[pod("a"), pod("b", ready=False, waiting="CrashLoopBackOff")]),
        "Degraded",
        "False",
        "ReplicasNotReady",
    ),
    (
        "weights still downloading",
        observe(pods=[pod("a", ready=False)], weights_job={"status": {"active": 1}}),
        "Progressing",
        "False",
        "WeightsNotReady",
    ),
    ("scaled to zero", observe(desired_replicas=0, pods=[]), "Pending", "False", "ScaledToZero"),
]


@pytest.mark.parametrize(("obs", "phase", "ready", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_phase_and_ready(obs: Observation, phase: str, ready: str, reason: str) -> None:
    result = compute(obs)
    assert result["phase"] == phase
    assert cond(result, names.COND_READY)["status"] == ready
    assert cond(result, names.COND_READY)["reason"] == reason


def test_ready_counts_only_current_ready_pods() -> None:
    result = compute(observe(pods=[pod("a"), pod("b", current=False), pod("c", ready=False)]))
    assert result["replicas"] == 3
    assert result["readyReplicas"] == 1
    assert result["desiredReplicas"] == 2


def test_ready_is_bounded_by_the_deployments_updated_pods() -> None:
    # A template change the annotations do not show (e.g. the image): the Deployment knows which are new.
    rolling = deployment(pods=[pod("a"), pod("b")], replicas=3, updatedReplicas=1, readyReplicas=2)
    result = compute(observe(pods=[pod("a"), pod("b"), pod("c", ready=False)], deployment=rolling))
    assert result["readyReplicas"] == 0
    assert cond(result, names.COND_READY)["status"] == "False"


def test_observed_fields() -> None:
    result = compute(observe(desired_replicas=3), plan=make_plan(gpus=2))
    assert result["observedGeneration"] == 3
    assert result["gpusPerReplica"] == 2
    assert result["gpus"] == 6
    assert result["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/component=server"
    assert result["plan"]["gpusPerReplica"] == 2
    assert result["plan"]["engine"]["moeBackend"] == "TRITON"


def test_endpoints_use_service_namespace_and_domain() -> None:
    result = compute(observe())
    assert result["endpoints"] == {
        "openai": "http://demo.team.svc.cluster.local:9000/v1",
        "http": None,  # Triton's ports are on the pods' loopback behind the gateway
        "grpc": None,
        "metrics": "http://demo.team.svc.cluster.local:8002/metrics",
    }


def test_without_the_gateway_the_endpoints_are_tritons() -> None:
    result = compute(observe(), plan=make_plan(openai=False))
    assert result["endpoints"]["openai"] is None
    assert result["endpoints"]["http"] == "http://demo.team.svc.cluster.local:8000"
    assert result["endpoints"]["grpc"] == "demo.team.svc.cluster.local:8001"


def test_conditions_have_the_standard_shape() -> None:
    result = compute(observe())
    types = [c["type"] for c in result["conditions"]]
    # EngineStandIn appears only where the CPU stand-in serves (tests/unit/status/test_status_engine.py).
    assert types == [t for t in status.OWNED_CONDITIONS if t != names.COND_ENGINE_STAND_IN]
    for condition in result["conditions"]:
        assert set(condition) == {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"}
        assert condition["status"] in {"True", "False", "Unknown"}
        assert condition["reason"].isalnum()
        assert condition["observedGeneration"] == 3


# ------------------------------------------------------------------------------ transition times
def test_last_transition_time_moves_only_on_flip() -> None:
    first = compute(observe(pods=[pod("a"), pod("b", ready=False)]), now=NOW)
    same = compute(observe(pods=[pod("a"), pod("b", ready=False)]), previous=first, now=LATER)
    assert same == first
    assert not would_write(first, same)

    flipped = compute(observe(), previous=first, now=LATER)
    assert cond(flipped, names.COND_READY)["lastTransitionTime"] == LATER
    assert cond(flipped, names.COND_DEGRADED)["lastTransitionTime"] == NOW  # still False
    assert would_write(first, flipped)


def test_reason_change_without_flip_keeps_time() -> None:
    first = compute(observe(pods=[pod("a", ready=False), pod("b", ready=False)]), now=NOW)
    second = compute(
        observe(pods=[pod("a", ready=False)], weights_job={"status": {"active": 1}}), previous=first, now=LATER
    )
    ready = cond(second, names.COND_READY)
    assert ready["reason"] == "WeightsNotReady"
    assert ready["lastTransitionTime"] == NOW


# ------------------------------------------------------------------------------------- weights
WEIGHTS_CASES = [
    ("existing claim", {"weights_from_existing_claim": True}, "True", "ExistingClaim"),
    ("job complete", {"weights_job": {"status": {"succeeded": 1}}}, "True", "Downloaded"),
    (
        "job failed",
        {"weights_job": {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}},
        "False",
        "DownloadFailed",
    ),
    ("job running", {"weights_job": {"status": {"active": 1}}}, "False", "Downloading"),
    ("no job, ready pod", {}, "True", "Loaded"),
    ("no job, nothing ready", {"pods": [pod("a", ready=False)]}, "Unknown", "Pending"),
]


@pytest.mark.parametrize(
    ("overrides", "state", "reason"), [c[1:] for c in WEIGHTS_CASES], ids=[c[0] for c in WEIGHTS_CASES]
)
def test_weights_ready(overrides: dict[str, Any], state: str, reason: str) -> None:
    weights = cond(compute(observe(**overrides)), names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == (state, reason)


def test_failed_download_degrades() -> None:
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    result = compute(observe(pods=[], weights_job=failed))
    assert result["phase"] == "Degraded"
    assert cond(result, names.COND_DEGRADED)["status"] == "True"


def test_progress_deadline_degrades() -> None:
    stuck = deployment(
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "x"}]
    )
    result = compute(observe(deployment=stuck, pods=[pod("a", ready=False)]))
    degraded = cond(result, names.COND_DEGRADED)
    assert degraded["status"] == "True"
    assert "progress deadline" in degraded["message"]


# ------------------------------------------------------------------------------------ capacity
CAPACITY_CASES = [
    ("all scheduled", capacity(fit=0, scheduled=2), "True", "SufficientGPUs"),
    ("rest fits", capacity(fit=1, scheduled=1), "True", "SufficientGPUs"),
    ("too few free", capacity(fit=1, scheduled=0, free=1), "False", "InsufficientGPUs"),
    ("no such product", capacity(fit=0, scheduled=0, nodes=0, free=0), "False", "NoMatchingNodes"),
    ("not read", None, "Unknown", "NotChecked"),
]


@pytest.mark.parametrize(
    ("cap", "state", "reason"), [c[1:] for c in CAPACITY_CASES], ids=[c[0] for c in CAPACITY_CASES]
)
def test_capacity_available(cap: Capacity | None, state: str, reason: str) -> None:
    capacity_cond = cond(compute(observe(capacity=cap, pods=[])), names.COND_CAPACITY_AVAILABLE)
    assert (capacity_cond["status"], capacity_cond["reason"]) == (state, reason)


def test_insufficient_capacity_message_names_the_fix() -> None:
    result = compute(observe(desired_replicas=5, pods=[], capacity=capacity(fit=2, scheduled=0, free=2)))
    message = cond(result, names.COND_CAPACITY_AVAILABLE)["message"]
    assert "spec.replicas=5" in message
    assert "spec.gpu.count" in message


# -------------------------------------------------------------------------------- invalid spec
def test_invalid_spec_keeps_observed_fields_and_foreign_conditions() -> None:
    previous = compute(observe())
    previous["conditions"].append(
        {
            "type": names.COND_CAPACITY_LIMITED,
            "status": "True",
            "reason": "Capped",
            "message": "",
            "lastTransitionTime": NOW,
        }
    )
    previous["autoscaling"] = {"recommendation": 4}
    result = status.invalid_spec_status(previous, generation=4, message="gpu.count: too many", now=LATER)
    ready = cond(result, names.COND_READY)
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", "gpu.count: too many")
    assert result["phase"] == "Failed"
    assert result["observedGeneration"] == 4
    assert cond(result, names.COND_CAPACITY_LIMITED)["reason"] == "Capped"  # the autoscaler's stays
    assert cond(result, names.COND_WEIGHTS_READY)["reason"] == "Loaded"  # last observed value kept
    applied = applied_fields(previous, result)
    assert would_write(previous, result)
    assert "autoscaling" not in applied  # the autoscaler's field


# ------------------------------------------------------------------------------- applied fields
def test_the_reconcile_never_states_autoscaling() -> None:
    new = compute(observe())
    previous = {**new, "autoscaling": {"recommendation": 3}}
    assert not would_write(previous, new)
    changed = compute(observe(desired_replicas=3), previous=previous)
    assert would_write(previous, changed)
    assert "autoscaling" not in applied_fields(previous, changed)


def test_a_stale_endpoint_is_left_out_so_the_apply_removes_it() -> None:
    previous = status_ownership.strip_none(compute(observe()))
    new = compute(observe(), previous=previous, plan=make_plan(openai=False))
    assert would_write(previous, new)
    assert "openai" not in applied_fields(previous, new).get("endpoints", {})


def test_nothing_is_written_after_the_server_dropped_nulls() -> None:
    stored = status_ownership.strip_none(compute(observe(), plan=make_plan(openai=False)))
    assert not would_write(stored, compute(observe(), previous=stored, plan=make_plan(openai=False)))


# -------------------------------------------------------------------------------------- events
def test_events_on_transitions_only() -> None:
    pending = compute(observe(pods=[], capacity=capacity(fit=0, scheduled=0, free=0)))
    events = status.transition_events(None, pending)
    assert [e.reason for e in events] == ["InsufficientCapacity"]
    assert all(e.type == "Warning" for e in events)

    assert (
        status.transition_events(
            pending, compute(observe(pods=[], capacity=capacity(fit=0, scheduled=0, free=0)), pending)
        )
        == []
    )

    ready = compute(observe(), previous=pending)
    assert sorted(e.reason for e in status.transition_events(pending, ready)) == ["CapacityAvailable", "Ready"]
    assert status.transition_events(ready, compute(observe(), previous=ready)) == []


def test_event_on_invalid_spec() -> None:
    invalid = status.invalid_spec_status(None, generation=1, message="gpu.product: unknown", now=NOW)
    events = status.transition_events(None, invalid)
    assert [(e.type, e.reason, e.message) for e in events] == [("Warning", "InvalidSpec", "gpu.product: unknown")]
    again = status.invalid_spec_status(invalid, generation=1, message="gpu.product: unknown", now=LATER)
    assert status.transition_events(invalid, again) == []
    assert not would_write(invalid, again)
