"""The autoscaler loop's wiring: it runs round after round, survives a failing round, and is registered."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from gptoss_operator.autoscaling.controller import Outcome
from gptoss_operator.autoscaling.runner import KubeAutoscalerApi, register, run_forever
from gptoss_operator.kube import GPTOSS, Kube
from gptoss_operator.main import build_registry
from gptoss_operator.settings import OperatorSettings


class CountingAutoscaler:
    def __init__(self, fail_on: set[int]) -> None:
        self.rounds = 0
        self.fail_on = fail_on
        self.done = asyncio.Event()

    async def evaluate_all(self) -> list[Outcome]:
        self.rounds += 1
        if self.rounds >= 3:
            self.done.set()
        if self.rounds in self.fail_on:
            raise RuntimeError("the API server is away")
        return []


async def test_rounds_continue_after_a_failing_round() -> None:
    autoscaler = CountingAutoscaler(fail_on={1})
    task = asyncio.create_task(run_forever(autoscaler, 0.01))  # type: ignore[arg-type]
    await asyncio.wait_for(autoscaler.done.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert autoscaler.rounds >= 3


def activity_ids(registry: kopf.OperatorRegistry) -> set[str]:
    return {handler.id for handler in registry._activities.get_all_handlers()}


def test_register_adds_start_and_stop_activities() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, Kube(object()), OperatorSettings())
    assert {"autoscaler-start", "autoscaler-stop"} <= activity_ids(registry)


def test_the_operator_registry_runs_the_autoscaler() -> None:
    assert "autoscaler-start" in activity_ids(build_registry(OperatorSettings(), Kube(object())))


class RecordingKube(Kube):
    def __init__(self) -> None:
        super().__init__(object())
        self.calls: list[tuple[str, Any]] = []

    def list_items(self, rtype: Any, namespace: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self.calls.append(("list", (rtype.kind, namespace)))
        return [{"metadata": {"name": f"cr-{namespace}"}}]

    def has_api(self, api_version: str, kind: str) -> bool:
        raise RuntimeError("discovery failed")


def test_adapter_lists_each_watched_namespace_and_treats_failed_discovery_as_no_keda() -> None:
    kube = RecordingKube()
    api = KubeAutoscalerApi(kube)
    assert [b["metadata"]["name"] for b in api.list_deployments(["a", "b"])] == ["cr-a", "cr-b"]
    assert api.list_deployments([]) == [{"metadata": {"name": "cr-None"}}]
    assert kube.calls[0] == ("list", (GPTOSS.kind, "a"))
    assert api.serves_keda() is False


class SyncedCache:
    """Stands in for caches.ClusterCache: what the autoscaler reads once it is synced."""

    synced = True

    def __init__(self) -> None:
        from gptoss_operator.caches import Store

        self.deployments = Store()
        self.deployments.upsert({"metadata": {"namespace": "a", "name": "cached"}})
        self.pods_seen: list[tuple[str, dict[str, str]]] = []

    def snapshot(self) -> Any:
        from gptoss_operator.caches import CapacitySnapshot

        return CapacitySnapshot(nodes=[{"metadata": {"name": "gpu-a"}}], pods=[{"metadata": {"name": "p"}}])

    def pods_of(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self.pods_seen.append((namespace, labels))
        return []


def test_adapter_reads_the_synced_caches_instead_of_listing() -> None:
    kube = RecordingKube()
    cache = SyncedCache()
    api = KubeAutoscalerApi(kube, lambda: cache)  # type: ignore[arg-type, return-value]
    assert [b["metadata"]["name"] for b in api.list_deployments(["a"])] == ["cached"]
    assert [n["metadata"]["name"] for n in api.nodes()] == ["gpu-a"]
    assert [p["metadata"]["name"] for p in api.active_pods()] == ["p"]
    api.active_pods("a", "app=x,tier=server")
    assert cache.pods_seen == [("a", {"app": "x", "tier": "server"})]
    assert kube.calls == []  # not one LIST
