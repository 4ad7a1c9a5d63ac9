"""Python's cyclic garbage collector at fleet scale: freeze what lives for good, and measure the pauses.

A full (generation 2) collection visits every object the collector tracks, with every thread of the process
stopped (it holds the GIL). Once the caches hold a large fleet that is ~300,000 objects (2,000 pods, 1,400
children, 100 nodes, the Kubernetes client's and Kopf's modules): 130-250 ms a collection, several times a
minute while pods change, measured with the recorder below during `bench/scale.py`. Every reconcile, watch
and Lease renewal in flight waits that long; it was the operator's share of the fleet's latency tail.

What survives a full collection mostly lives on (modules, cached objects): `gc.freeze()` moves it to a
generation the collector never visits, so later full collections see only newer objects. The policy:

- once the caches have synced, collect and freeze (`freeze_long_lived_heap`);
- when a full collection took over `LONG_FULL_COLLECTION_S` (the heap grew: a burst of new CRs and their
  pods), freeze again soon after (`HeapFreezer.tick`: the young generations are collected first, so no
  fresh garbage is frozen);
- every `THAW_EVERY_S`, unfreeze, collect everything and freeze: frozen objects are still freed by reference
  counting when a cache replaces them, but a frozen object that later ends up in a garbage cycle would
  never be freed; the hourly thaw bounds that at the price of one full pause an hour.
"""

from __future__ import annotations

import bisect
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gptoss_operator import names

log = logging.getLogger(__name__)

GENERATIONS: Final = (0, 1, 2)
LONG_FULL_COLLECTION_S: Final = 0.05
THAW_EVERY_S: Final = 3600.0
TEND_EVERY_S: Final = 5.0  # how often the runtime asks `HeapFreezer.tick` whether to freeze
PAUSE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LONG_FROM: Final = PAUSE_BUCKETS.index(LONG_FULL_COLLECTION_S) + 1  # the first bucket of the long collections


def freeze_long_lived_heap() -> int:
    """Collect once, then freeze every surviving object (see the module docstring); returns how many."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d long-lived objects after %.0f ms of collection", frozen, 1000 * (time.perf_counter() - started))
    return frozen


class GcPauseRecorder(Collector):
    """`gptoss_operator_gc_pause_seconds{generation}`: how long each collection stopped the process.

    The `gc.callbacks` hook runs inside a collection, in whichever thread allocated last, holding the GIL:
    it takes no lock (a metric's lock held by that very thread would deadlock it) and only adds to plain
    integers and floats; the histogram is built from them when Prometheus scrapes.
    """

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self._buckets = {g: [0] * (len(PAUSE_BUCKETS) + 1) for g in GENERATIONS}  # the last one is +Inf
        self._sums = dict.fromkeys(GENERATIONS, 0.0)
        self._registries: list[CollectorRegistry] = []

    @property
    def long_full_collections(self) -> int:
        """Full collections that took over LONG_FULL_COLLECTION_S (a bucket bound): HeapFreezer reads it."""
        return sum(self._buckets[GENERATIONS[-1]][_LONG_FROM:])

    def install(self, registry: CollectorRegistry) -> None:
        """Time every collection from now on and expose the histogram in `registry` (again: no change)."""
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)
        if registry not in self._registries:
            registry.register(self)
            self._registries.append(registry)

    def uninstall(self, registry: CollectorRegistry) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        if registry in self._registries:
            registry.unregister(self)
            self._registries.remove(registry)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:
            return  # installed in the middle of a collection
        self.observe(int(info.get("generation", 0)), self._clock() - self._started)
        self._started = None

    def observe(self, generation: int, seconds: float) -> None:
        counts = self._buckets.get(generation)
        if counts is None:
            return
        counts[bisect.bisect_left(PAUSE_BUCKETS, seconds)] += 1  # the first bound >= seconds; past the last: +Inf
        self._sums[generation] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            names.METRIC_GC_PAUSE,
            "How long one collection of Python's cyclic garbage collector stopped the operator, by generation.",
            labels=["generation"],
        )
        for generation in GENERATIONS:
            running, buckets = 0, []
            for bound, count in zip((*PAUSE_BUCKETS, float("inf")), self._buckets[generation], strict=True):
                running += count
                buckets.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family


RECORDER: Final = GcPauseRecorder()  # the process's one recorder: main installs it, the runtime's freezer reads it


class HeapFreezer:
    """When to freeze again (see the module docstring); `tick` is called every `TEND_EVERY_S` by the runtime."""

    def __init__(
        self,
        recorder: GcPauseRecorder = RECORDER,
        *,
        clock: Any = time.monotonic,
        thaw_every_s: float = THAW_EVERY_S,
        collector: Any = gc,
    ) -> None:
        self._recorder = recorder
        self._clock = clock
        self._thaw_every = thaw_every_s
        self._gc = collector
        self._long_seen = recorder.long_full_collections
        self._last_thaw = clock()

    def tick(self) -> str | None:
        """Freeze or thaw when due; returns what it did ("thawed", "froze") or None."""
        if self._clock() - self._last_thaw >= self._thaw_every:
            self._gc.unfreeze()
            self._gc.collect()
            self._gc.freeze()
            self._last_thaw = self._clock()
            self._long_seen = self._recorder.long_full_collections
            return "thawed"
        if self._recorder.long_full_collections > self._long_seen:
            self._long_seen = self._recorder.long_full_collections
            self._gc.collect(1)  # the young generations only: fresh garbage is not frozen
            self._gc.freeze()
            log.info("froze %d objects after a long full collection", self._gc.get_freeze_count())
            return "froze"
        return None
