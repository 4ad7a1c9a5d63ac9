"""Python's collector at fleet scale (gc_pauses.py): the pause histogram and the freeze after the caches sync."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gptoss_operator import gc_pauses, names


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def sample(text: str, suffix: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{names.METRIC_GC_PAUSE}{suffix}{{") and all(part in line for part in wanted.split(",")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {names.METRIC_GC_PAUSE}{suffix} {labels} in:\n{text}")


@pytest.fixture
def registry() -> Iterator[tuple[CollectorRegistry, gc_pauses.GcPauseRecorder]]:
    registry = CollectorRegistry()
    recorder = gc_pauses.GcPauseRecorder()
    recorder.install(registry)
    try:
        yield registry, recorder
    finally:
        recorder.uninstall(registry)


def test_installing_twice_changes_nothing(registry: tuple[CollectorRegistry, gc_pauses.GcPauseRecorder]) -> None:
    reg, recorder = registry
    recorder.install(reg)  # a second run() in one process
    assert gc.callbacks.count(recorder._on_collection) == 1
    assert exposition(reg).count(f"# TYPE {names.METRIC_GC_PAUSE} histogram") == 1


def test_pauses_land_in_their_bucket_per_generation(
    registry: tuple[CollectorRegistry, gc_pauses.GcPauseRecorder],
) -> None:
    reg, recorder = registry
    recorder.observe(2, 0.180)  # a full collection of a large fleet's heap
    recorder.observe(2, 0.004)
    recorder.observe(0, 0.0002)
    text = exposition(reg)
    assert sample(text, "_bucket", generation="2", le="0.1") == 1
    assert sample(text, "_bucket", generation="2", le="0.25") == 2
    assert sample(text, "_count", generation="2") == 2
    assert sample(text, "_sum", generation="2") == pytest.approx(0.184)
    assert sample(text, "_bucket", generation="0", le="0.001") == 1
    assert sample(text, "_count", generation="1") == 0


def test_a_real_collection_is_timed_from_its_start_to_its_stop() -> None:
    ticks = iter([10.0, 10.25])
    reg = CollectorRegistry()
    recorder = gc_pauses.GcPauseRecorder(clock=lambda: next(ticks, 99.0))
    recorder.install(reg)
    try:
        gc.collect()  # start and stop of one full collection, 250 ms on this clock
    finally:
        recorder.uninstall(reg)
    assert recorder._on_collection not in gc.callbacks  # uninstalled: later collections are not timed
    (family,) = recorder.collect()
    values = {(s.name, s.labels.get("generation")): s.value for s in family.samples}
    assert values[(f"{names.METRIC_GC_PAUSE}_count", "2")] == 1
    assert values[(f"{names.METRIC_GC_PAUSE}_sum", "2")] == pytest.approx(0.25)


def test_the_long_lived_heap_is_frozen_out_of_full_collections() -> None:
    try:
        frozen = gc_pauses.freeze_long_lived_heap()
        assert frozen > 0 and gc.get_freeze_count() == frozen
        assert gc.get_count()[2] == 0  # nothing left in the oldest generation for a full collection to visit
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


class FakeCollector:
    """Records the freezer's calls instead of freezing the test process."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect({generation})")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def get_freeze_count(self) -> int:
        return 1


def test_a_long_full_collection_makes_the_freezer_freeze_once_without_fresh_garbage() -> None:
    recorder = gc_pauses.GcPauseRecorder()
    collector = FakeCollector()
    freezer = gc_pauses.HeapFreezer(recorder, clock=lambda: 0.0, collector=collector)
    recorder.observe(2, 0.03)  # a short full collection: nothing to do
    recorder.observe(1, 0.2)  # a long young collection is not the heap's size
    assert freezer.tick() is None and collector.calls == []

    recorder.observe(2, 0.2)  # the heap grew (a burst of new CRs): freeze what survived
    assert freezer.tick() == "froze"
    assert collector.calls == ["collect(1)", "freeze"]  # young garbage collected first
    assert freezer.tick() is None  # once per long collection


def test_the_freezer_thaws_and_collects_everything_hourly() -> None:
    now = [0.0]
    collector = FakeCollector()
    freezer = gc_pauses.HeapFreezer(gc_pauses.GcPauseRecorder(), clock=lambda: now[0], collector=collector)
    now[0] = gc_pauses.THAW_EVERY_S - 1
    assert freezer.tick() is None
    now[0] = gc_pauses.THAW_EVERY_S
    assert freezer.tick() == "thawed"
    assert collector.calls == ["unfreeze", "collect(2)", "freeze"]  # cycles among frozen objects are freed
    assert freezer.tick() is None
