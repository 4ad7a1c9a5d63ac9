"""One bounded work queue per operator, keyed by CR, with per-key backoff (asyncio).

Every trigger (Kopf handlers, child and pod events from the caches, the autoscaler after a scale, the
jittered resync) calls `add(key)`; nothing else starts a reconcile. Properties:

- a key is queued at most once, however many triggers arrive (bursts during a rollout collapse); a
  delayed add (the handlers delay echoes of pods and children a second) keeps the earliest deadline;
- a key is never processed by two workers at once; a trigger during its processing re-queues it after;
- at most `workers` keys are processed at a time (memory stays bounded at startup with hundreds of CRs);
- a failed key comes back after a per-key exponential backoff (or the delay the failure asks for); a
  success forgets its failures;
- an urgent key (a new or changed spec) goes before the others (echoes of pods and children settling), so
  a fleet that is busy settling still applies a new CR's children at once.

`add` is thread-safe (the caches' reflector threads call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BASE_BACKOFF_SECONDS: Final = 1.0
MAX_BACKOFF_SECONDS: Final = 60.0


class RetryAfter(Exception):  # noqa: N818 - it is an instruction, not a failure
    """Raised by a processor to ask for the key to come back after `delay` seconds."""

    def __init__(self, delay: float, message: str = "") -> None:
        super().__init__(message or f"retry in {delay:.1f}s")
        self.delay = delay


def backoff_delay(failures: int, base: float = BASE_BACKOFF_SECONDS, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """1, 2, 4 ... `cap` seconds for the 1st, 2nd, 3rd ... consecutive failure."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


class WorkQueue(Generic[K]):
    """Keyed queue with deduplication, bounded workers and per-key exponential backoff."""

    def __init__(
        self,
        process: Callable[[K], Awaitable[None]],
        *,
        workers: int = 4,
        base_backoff_seconds: float = BASE_BACKOFF_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self._process = process
        self._base_backoff = base_backoff_seconds
        self._worker_count = workers
        self._max_backoff = max_backoff_seconds
        self._ready: asyncio.PriorityQueue[tuple[int, int, K]] = asyncio.PriorityQueue()
        self._queued: dict[K, int] = {}  # key -> priority of its entry (0 urgent, 1 normal)
        self._sequence = 0  # FIFO within a priority
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._delayed: dict[K, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.processed = 0  # keys processed since start (for tests and the bench)

    # ------------------------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Accept keys (from any thread) without processing any yet: `start` starts the workers."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        """Start the workers (opening the queue first if needed); keys queued while only open run now."""
        self.open()
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self._worker_count)
            ]

    async def stop(self) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------------------------- triggers
    def add(self, key: K, delay: float = 0.0, *, urgent: bool = False) -> None:
        """Queue `key` (after `delay` seconds; `urgent`: before the others); safe to call from any thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("WorkQueue.add before open() or start()")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._add(key, delay, urgent)
        else:
            loop.call_soon_threadsafe(self._add, key, delay, urgent)

    def _add(self, key: K, delay: float, urgent: bool = False) -> None:
        if delay > 0:
            self._add_later(key, delay)
            return
        if key in self._processing:
            self._dirty.add(key)  # goes round once more when the running one ends
            return
        priority = 0 if urgent else 1
        if key in self._queued:
            if priority < self._queued[key]:  # promote: a second entry; the first is skipped when it comes up
                self._push(key, priority)
            return
        if key in self._delayed:
            if self._failures.get(key):
                return  # backing off after a failure: triggers (often echoes of our own writes) wait too
            self._delayed.pop(key).cancel()  # a plain delayed add: the trigger brings it forward
        self._push(key, priority)

    def _push(self, key: K, priority: int) -> None:
        self._queued[key] = priority
        self._sequence += 1
        self._ready.put_nowait((priority, self._sequence, key))

    def _add_later(self, key: K, delay: float) -> None:
        """Queue `key` in `delay` seconds; an earlier deadline wins (a trigger must not wait for the resync)."""
        if key in self._queued:
            return
        assert self._loop is not None
        due = self._loop.time() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if self._failures.get(key) or pending.when() <= due:
                return  # backing off after a failure, or already due sooner: triggers coalesce into it
            pending.cancel()
        self._delayed[key] = self._loop.call_at(due, self._fire_delayed, key)

    def _fire_delayed(self, key: K) -> None:
        self._delayed.pop(key, None)
        self._add(key, 0.0)

    # -------------------------------------------------------------------------------------- workers
    def __len__(self) -> int:
        return len(self._queued) + len(self._delayed)

    def failures(self, key: K) -> int:
        """Consecutive failures of `key` (0 after a success)."""
        return self._failures.get(key, 0)

    @property
    def idle(self) -> bool:
        """Nothing queued, delayed or running."""
        return not self._queued and not self._processing and not self._delayed

    async def _work(self) -> None:
        while True:
            priority, _, key = await self._ready.get()
            if self._queued.get(key) != priority:
                continue  # a stale entry of a promoted (or already processed) key
            del self._queued[key]
            self._processing.add(key)
            retry_in: float | None = None
            try:
                await self._process(key)
                self._failures.pop(key, None)
            except RetryAfter as request:
                retry_in = min(self._max_backoff, max(request.delay, self._next_backoff(key)))
                log.info("reconcile of %s retries in %.1fs: %s", key, retry_in, request)
            except Exception as error:  # the queue must outlive any failure: back off and retry
                retry_in = self._next_backoff(key)
                log.warning("reconcile of %s failed (retry in %.1fs): %s", key, retry_in, error)
            finally:
                self._processing.discard(key)
                self.processed += 1
            dirty = key in self._dirty
            self._dirty.discard(key)
            if retry_in is not None:
                pending = self._delayed.pop(key, None)  # a backoff replaces any coalescing timer: it sets the pace
                if pending is not None:
                    pending.cancel()
                self._add_later(key, retry_in)
            elif dirty:
                self._add(key, 0.0)

    def _next_backoff(self, key: K) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return backoff_delay(failures, self._base_backoff, self._max_backoff)
