"""The operator's start: no reconcile runs before the watch-fed caches are synced (client-go's
WaitForCacheSync). One that ran earlier would LIST every pod and node of the cluster: right after a
failover, with eight workers at once, while the caches' own first LISTs still run."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from kmock_support import eventually

from gptoss_operator import handlers
from gptoss_operator.kube import Kube
from gptoss_operator.settings import OperatorSettings


@pytest.fixture(autouse=True)
def no_real_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """gc.freeze in the test process would keep every test's cycles for good."""
    monkeypatch.setattr(handlers.gc_pauses, "freeze_long_lived_heap", lambda: 0)


class SlowCache:
    """A ClusterCache whose CR watch has delivered one CR while its pod LIST is still running."""

    synced_now = threading.Event()

    def __init__(self, _kube: Any, _kinds: Any, *, on_spec_change: Any, **_: Any) -> None:
        self._on_spec_change = on_spec_change

    def start(self) -> None:
        self._on_spec_change("team", "chat")  # the CR watch's first event

    def wait_synced(self, timeout_seconds: float) -> bool:
        return self.synced_now.wait(timeout_seconds)

    def stop(self) -> None:
        return None


async def test_reconciles_wait_for_the_caches_and_then_run_what_they_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    reconciled: list[tuple[str, str]] = []
    monkeypatch.setattr(handlers, "ClusterCache", SlowCache)
    monkeypatch.setattr(handlers, "reconcile_or_retry_after", lambda _r, ns, name: reconciled.append((ns, name)))
    SlowCache.synced_now.clear()
    settings = OperatorSettings(namespaces=["team"], cache_sync_timeout_seconds=10)
    runtime = handlers.OperatorRuntime(Kube(object()), settings, child_kinds=[])
    starting = asyncio.create_task(runtime.start())
    await asyncio.sleep(0.2)
    assert reconciled == [] and len(runtime.queue) == 1  # queued by the cache, not run

    SlowCache.synced_now.set()
    await asyncio.wait_for(starting, 5)
    await eventually(lambda: bool(reconciled))
    assert reconciled == [("team", "chat")]
    await runtime.stop()


async def test_the_heap_is_frozen_once_the_caches_are_synced_and_before_any_reconcile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caches' first state is frozen out of Python's full collections (gc_pauses.py) right after the sync."""
    order: list[str] = []
    monkeypatch.setattr(handlers, "ClusterCache", SlowCache)
    monkeypatch.setattr(handlers, "reconcile_or_retry_after", lambda _r, ns, name: order.append(f"reconcile {name}"))
    monkeypatch.setattr(
        handlers.gc_pauses,
        "freeze_long_lived_heap",
        lambda: order.append("freeze, synced" if SlowCache.synced_now.is_set() else "freeze, not synced") or 1,
    )
    SlowCache.synced_now.clear()
    settings = OperatorSettings(namespaces=["team"], cache_sync_timeout_seconds=10)
    runtime = handlers.OperatorRuntime(Kube(object()), settings, child_kinds=[])
    starting = asyncio.create_task(runtime.start())
    await asyncio.sleep(0.1)
    assert order == []

    SlowCache.synced_now.set()
    await asyncio.wait_for(starting, 5)
    await eventually(lambda: len(order) == 2)
    assert order == ["freeze, synced", "reconcile chat"]
    await runtime.stop()
