"""Getting responses to Triton and noticing cancelled requests, off the engine's event loop.

Both `ResponseSender.send()` and `request.is_cancelled()` are blocking round trips from the Python-backend
stub to the Triton server. Made on the event loop that also drives the engine, they stall every request
for each one of them. So (as NVIDIA's own Triton model for the LLM API does):

- `Outbox`: a few sender threads. The engine's loop only queues `(sender, payload, final)`; each request
  belongs to one thread (by its sender), which builds the responses and sends them, everything queued at
  once per wake-up, in queue order (so each request's responses keep their order). Several threads,
  because a send waits for the server: measured about 0.5 ms per send (p99 10 ms on a loaded 2-core
  machine), so one thread caps near 2,000 responses a second and, when many requests finish a step
  together, every stream waited behind the burst (an outbox 250 responses deep added 100+ ms to the
  inter-token latency of all 256 streams). The stub lets go of the GIL while a send waits, so the
  threads' sends overlap. A send that fails (the client is gone) is reported and dropped.
- `CancellationSweep`: one thread asks the requests in flight `is_cancelled()` and cancels the
  engine-loop task of each cancelled one. Requests no longer ask for themselves, and each period
  asks at most `checks_per_period` of them, round robin: `is_cancelled()` is a round trip to the
  server like a send, and asking all 256 requests every 100 ms was 2,560 round trips a second, four
  times the responses themselves. A client that leaves is noticed within
  `period * ceil(requests / checks_per_period)` (0.8 s at 256 requests).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

CANCEL_SWEEP_SECONDS: Final = 0.1
CANCEL_CHECKS_PER_SWEEP: Final = 32
SENDER_THREADS: Final = 4
_STOP: Final = object()
_Payload = TypeVar("_Payload")

ResponseFactory = Callable[[Any], Any]  # payload -> pb_utils.InferenceResponse
ErrorReporter = Callable[[str], None]


@dataclass(frozen=True)
class _Delivery(Generic[_Payload]):
    sender: Any
    payload: _Payload
    final: bool
    before_send: Callable[[], None] | None = None


class Outbox(Generic[_Payload]):
    """Sends responses from `threads` threads of its own, each request's from one of them, in order;
    `put` never blocks."""

    def __init__(
        self,
        make_response: Callable[[_Payload], Any],
        final_flag: int,
        report: ErrorReporter,
        name: str = "gpt_oss-sender",
        threads: int = SENDER_THREADS,
    ) -> None:
        if threads < 1:
            raise ValueError(f"an outbox needs at least one thread, got {threads}")
        self._make_response = make_response
        self._final_flag = final_flag
        self._report = report
        self._queues: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(threads)]
        self._threads = [
            threading.Thread(target=self._run, args=(own,), name=f"{name}-{index}", daemon=True)
            for index, own in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()
        self.sent = 0  # approximate with several threads (no lock on the hot path): for tests and logs

    def put(
        self, sender: Any, payload: _Payload, *, final: bool, before_send: Callable[[], None] | None = None
    ) -> None:
        """Queue a response; `before_send` runs on the sender thread just before it is sent (for the
        final one: stop asking the request `is_cancelled()`, which must never follow the final send)."""
        # A request's sender object lives as long as the request: its address picks its thread.
        self._queues[(id(sender) >> 4) % len(self._queues)].put(_Delivery(sender, payload, final, before_send))

    def close(self, timeout: float) -> None:
        """Send what is queued, then stop the threads."""
        for own in self._queues:
            own.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, own: queue.SimpleQueue[Any]) -> None:
        while True:
            batch = [own.get()]
            while True:  # take everything queued meanwhile: one wake-up per burst, not per response
                try:
                    batch.append(own.get_nowait())
                except queue.Empty:
                    break
            for item in batch:
                if item is _STOP:
                    return
                self._deliver(item)

    def _deliver(self, item: _Delivery[_Payload]) -> None:
        try:
            if item.before_send is not None:
                item.before_send()
            response = self._make_response(item.payload)
            item.sender.send(response, flags=self._final_flag if item.final else 0)
            self.sent += 1
        except Exception as error:  # the client may be gone; the thread must keep serving the others
            self._report(f"gpt_oss: response not delivered: {error!r}")


class CancellationSweep:
    """Asks watched requests `is_cancelled()` from one thread, at most `checks_per_period` of them per
    period (round robin, so each is asked in turn), and calls the `cancel` of each cancelled one (once)."""

    def __init__(
        self,
        period_s: float = CANCEL_SWEEP_SECONDS,
        name: str = "gpt_oss-cancel",
        checks_per_period: int = CANCEL_CHECKS_PER_SWEEP,
    ) -> None:
        if checks_per_period < 1:
            raise ValueError(f"checks_per_period must be at least 1, got {checks_per_period}")
        self._period_s = period_s
        self._checks_per_period = checks_per_period
        self._last_asked = -1  # the key asked last: the next sweep goes on after it
        self._watched: dict[int, tuple[Callable[[], bool], Callable[[], None]]] = {}
        self._keys = itertools.count()
        self._lock = threading.Condition()
        self._asking: int | None = None  # the key whose `is_cancelled()` runs now
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def watched(self) -> int:
        return len(self._watched)

    def watch(self, is_cancelled: Callable[[], bool], cancel: Callable[[], None]) -> int:
        """Watch a request until `forget(key)`; `cancel` must be thread-safe."""
        key = next(self._keys)
        with self._lock:
            self._watched[key] = (is_cancelled, cancel)
        return key

    def forget(self, key: int) -> None:
        """Stop watching; returns only once no `is_cancelled()` of this request runs or will run. That
        matters: once a request's final response is sent, Triton releases it, and asking it then
        crashed tritonserver (SIGSEGV in `TRITONBACKEND_ResponseFactoryIsCancelled`, seen under load)."""
        with self._lock:
            self._watched.pop(key, None)
            while self._asking == key:
                self._lock.wait()

    def close(self, timeout: float) -> None:
        self._stopped.set()
        self._thread.join(timeout)

    def sweep(self) -> int:
        """Ask the next `checks_per_period` watched requests; returns how many were cancelled."""
        with self._lock:
            # Keys grow with each watch and the dict keeps insertion order: go on after the last asked.
            watched = list(self._watched.items())
        split = next((index for index, (key, _) in enumerate(watched) if key > self._last_asked), len(watched))
        turn = (watched[split:] + watched[:split])[: self._checks_per_period]
        if turn:
            self._last_asked = turn[-1][0]
        cancelled = 0
        for key, (is_cancelled, cancel) in turn:
            with self._lock:
                if key not in self._watched:  # forgotten since the snapshot: its request may be released
                    continue
                self._asking = key
            try:
                gone = is_cancelled()
            except Exception:  # the request failed on the server side: nothing left to cancel
                gone = False
            finally:
                with self._lock:
                    self._asking = None
                    self._lock.notify_all()
            if gone:
                self.forget(key)
                cancel()
                cancelled += 1
        return cancelled

    def _run(self) -> None:
        while not self._stopped.wait(self._period_s):
            self.sweep()
