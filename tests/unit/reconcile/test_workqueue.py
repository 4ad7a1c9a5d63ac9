"""The operator's work queue: one run per key at a time, deduplicated triggers, bounded workers, backoff."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
from kmock_support import eventually

from gptoss_operator.workqueue import RetryAfter, WorkQueue, backoff_delay


async def wait_until_idle(queue: WorkQueue[str]) -> None:
    await eventually(lambda: queue.idle)


async def test_triggers_during_a_run_collapse_into_one_more_run() -> None:
    release = asyncio.Event()
    runs: Counter[str] = Counter()

    async def process(key: str) -> None:
        runs[key] += 1
        if runs[key] == 1:
            await release.wait()

    queue: WorkQueue[str] = WorkQueue(process, workers=4)
    queue.start()
    queue.add("a")
    await eventually(lambda: runs["a"] == 1)
    for _ in range(10):  # a burst of child events while the first run is busy
        queue.add("a")
    release.set()
    await wait_until_idle(queue)
    await queue.stop()
    assert runs["a"] == 2


async def test_a_key_never_runs_twice_at_once_and_workers_are_bounded() -> None:
    running: set[str] = set()
    peak = 0
    overlaps: list[str] = []

    async def process(key: str) -> None:
        nonlocal peak
        if key in running:
            overlaps.append(key)
        running.add(key)
        peak = max(peak, len(running))
        await asyncio.sleep(0.01)
        running.discard(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=2)
    queue.start()
    for round_ in range(3):
        for key in "abcdef":
            queue.add(key)
        await asyncio.sleep(0.005 * round_)
    await wait_until_idle(queue)
    await queue.stop()
    assert overlaps == []
    assert peak == 2


async def test_a_failing_key_backs_off_and_a_success_forgets_it() -> None:
    attempts: Counter[str] = Counter()

    async def process(key: str) -> None:
        attempts[key] += 1
        if attempts[key] < 3:
            raise RuntimeError("API away")

    queue: WorkQueue[str] = WorkQueue(process, workers=1, base_backoff_seconds=0.01, max_backoff_seconds=0.05)
    queue.start()
    queue.add("a")
    await wait_until_idle(queue)
    assert attempts["a"] == 3
    assert queue.failures("a") == 0  # the success forgot them
    await queue.stop()


async def test_retry_after_asks_for_its_delay_and_triggers_do_not_skip_a_backoff() -> None:
    attempts: Counter[str] = Counter()
    second = asyncio.Event()

    async def process(key: str) -> None:
        attempts[key] += 1
        if attempts[key] == 1:
            raise RetryAfter(0.2, "429")
        second.set()

    queue: WorkQueue[str] = WorkQueue(process, workers=1, base_backoff_seconds=0.01)
    queue.start()
    queue.add("a")
    await eventually(lambda: queue.failures("a") == 1 and len(queue) == 1)
    queue.add("a")  # an echo of our own write: it waits for the backoff
    assert attempts["a"] == 1 and len(queue) == 1
    await asyncio.wait_for(second.wait(), 5)
    await queue.stop()
    assert attempts["a"] == 2


async def test_add_from_another_thread() -> None:
    done = asyncio.Event()

    async def process(_key: str) -> None:
        done.set()

    queue: WorkQueue[str] = WorkQueue(process)
    queue.start()
    thread = threading.Thread(target=queue.add, args=("a",))
    thread.start()
    await asyncio.wait_for(done.wait(), 5)
    thread.join()
    await queue.stop()


@pytest.mark.parametrize(("failures", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)])
def test_backoff_doubles_up_to_a_cap(failures: int, expected: float) -> None:
    assert backoff_delay(failures) == expected


async def test_urgent_keys_go_before_the_settling_ones() -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def process(key: str) -> None:
        order.append(key)
        if key == "busy":
            await release.wait()

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    queue.add("busy")
    await eventually(lambda: order == ["busy"])
    for key in ("settling-1", "settling-2", "promoted"):
        queue.add(key)
    queue.add("new-cr", urgent=True)
    queue.add("promoted", urgent=True)  # was queued as a plain key: now goes first too, and runs once
    release.set()
    await wait_until_idle(queue)
    await queue.stop()
    assert order == ["busy", "new-cr", "promoted", "settling-1", "settling-2"]


async def test_delayed_triggers_coalesce_and_an_earlier_deadline_wins() -> None:
    runs: Counter[str] = Counter()

    async def process(key: str) -> None:
        runs[key] += 1

    queue: WorkQueue[str] = WorkQueue(process, workers=2)
    queue.start()
    queue.add("a", delay=3600)  # the resync's slot for "a", far away
    for _ in range(5):  # a burst of pod events: each asks for a short coalescing delay
        queue.add("a", delay=0.05)
    queue.add("a", delay=3600)  # a later deadline does not push the pending one back
    await eventually(lambda: runs["a"] == 1)
    await wait_until_idle(queue)  # nothing else is left: the far resync slot was replaced, not kept
    await queue.stop()
    assert runs["a"] == 1


async def test_a_coalescing_trigger_does_not_cut_a_failure_backoff_short() -> None:
    runs: Counter[str] = Counter()

    async def process(key: str) -> None:
        runs[key] += 1
        if runs[key] == 1:
            raise RetryAfter(3600, "refused")

    queue: WorkQueue[str] = WorkQueue(process, workers=1, max_backoff_seconds=3600)
    queue.start()
    queue.add("a")
    await eventually(lambda: queue.failures("a") == 1)
    queue.add("a", delay=0.01)
    await asyncio.sleep(0)  # let the add land (it is scheduled on the loop)
    retry_in = queue._delayed["a"].when() - asyncio.get_running_loop().time()
    assert retry_in > 3000 and runs["a"] == 1  # still backing off: the failure sets the pace
    await queue.stop()


def test_a_status_write_names_what_changed() -> None:
    from gptoss_operator.reconcile import changed_parts

    live = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}, {"type": "X", "status": "True"}]}
    fields = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "True"}]}
    assert changed_parts(fields, live) == ["phase", "conditions[Ready]"]
    assert changed_parts(live, live) == []


async def test_an_open_queue_holds_keys_until_its_workers_start() -> None:
    runs: list[str] = []

    async def process(key: str) -> None:
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=2)
    queue.open()  # what the runtime does while the caches sync: their first events queue every CR
    queue.add("a")
    queue.add("b", urgent=True)
    queue.add("a")
    await asyncio.sleep(0.05)
    assert runs == [] and len(queue) == 2
    queue.start()
    await wait_until_idle(queue)
    await queue.stop()
    assert runs == ["b", "a"]  # each once, the urgent one first


def test_adding_to_a_queue_never_opened_says_so() -> None:
    queue: WorkQueue[str] = WorkQueue(lambda _key: asyncio.sleep(0))
    with pytest.raises(RuntimeError, match="before open"):
        queue.add("a")
