"""Getting responses to Triton and noticing cancelled requests, off the engine's event loop.

Both `ResponseSender.send()` and `request.is_cancelled()` are blocking round trips from the Python-backend
stub to the Triton server. Made on the event loop that also drives the engine, they stall every request
for each one of them. So (as NVIDIA's own Triton model for the LLM API does):

- `Outbox`: a few sender threads. The engine's loop only queues `(sender, payload, final)`; an idle
  thread takes the request that has waited longest with everything queued for it, builds the
  responses and sends them; a request is never in two threads' hands at once, so its responses keep
  their order. Several threads, because a send waits for the server (about 0.5 ms, p99 10 ms on a
  loaded 2-core machine) and the stub lets go of the GIL meanwhile, so the threads' sends overlap.
  Work-conserving, not one fixed thread per request: the earlier fixed choice, `(id(sender) >> 4) %
  threads`, put every request on the same thread (the stub's sender objects all sit at addresses
  equal modulo 64: one run's 515 senders all hashed to thread 3, and all 11,296 sends went through
  it), so a burst of requests ending and starting together queued hundreds of responses behind one
  thread: 300-800 ms added to the inter-token latency of all 256 streams (per-stage timestamps). Four
  threads, not more: each wake-up of another thread is a GIL hand-off and, on 2 busy cores, a wait
  for a CPU; 8 and 16 threads gave a longer tail than 4 (p99 64-175 ms against 29-46 ms, same load).
  Responses of one request queued together go out as one where `merge` allows (same channel): under
  a backlog a stream gets its text in fewer, larger responses instead of falling further behind.
  A send that fails (the client is gone) is reported and dropped.
- `CancellationSweep`: one thread asks the requests in flight `is_cancelled()` and cancels the
  engine-loop task of each cancelled one. Requests no longer ask for themselves, and each period
  asks at most `checks_per_period` of them, round robin: `is_cancelled()` is a round trip to the
  server like a send, and asking all 256 requests every 100 ms was 2,560 round trips a second, four
  times the responses themselves. A client that leaves is noticed within
  `period * ceil(requests / checks_per_period)` (0.8 s at 256 requests).
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

CANCEL_SWEEP_SECONDS: Final = 0.1
CANCEL_CHECKS_PER_SWEEP: Final = 32
SENDER_THREADS: Final = 4  # see the module's docstring for why four
_Payload = TypeVar("_Payload")

ResponseFactory = Callable[[Any], Any]  # payload -> pb_utils.InferenceResponse
ErrorReporter = Callable[[str], None]
# (earlier, later) -> one payload saying both, or None when they must go out as two responses.
Merger = Callable[[_Payload, _Payload], "_Payload | None"]


@dataclass(frozen=True)
class _Delivery(Generic[_Payload]):
    sender: Any
    payload: _Payload
    final: bool
    before_send: Callable[[], None] | None = None


class Outbox(Generic[_Payload]):
    """Sends responses from `threads` threads of its own, each request's in order; `put` never blocks.

    Any idle thread takes the request that has waited longest (work-conserving: a slow send holds up its
    own request only, never the requests queued behind it), with everything queued for that request
    meanwhile: with `merge`, responses queued together go out as one where `merge` allows (under a
    backlog a stream then gets its text in fewer, larger responses instead of falling further behind)."""

    def __init__(
        self,
        make_response: Callable[[_Payload], Any],
        final_flag: int,
        report: ErrorReporter,
        name: str = "gpt_oss-sender",
        threads: int = SENDER_THREADS,
        merge: Merger[_Payload] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"an outbox needs at least one thread, got {threads}")
        self._make_response = make_response
        self._final_flag = final_flag
        self._report = report
        self._merge = merge
        self._lock = threading.Condition()
        # Keyed by id(sender): the sender stays alive (its id its own) while a delivery of it is queued or sent.
        self._queued: dict[int, list[_Delivery[_Payload]]] = {}
        self._ready: collections.deque[int] = collections.deque()  # queued and no send in flight, oldest first
        self._in_flight: set[int] = set()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()
        self.sent = 0  # approximate with several threads (no lock on the hot path): for tests and logs

    def put(
        self, sender: Any, payload: _Payload, *, final: bool, before_send: Callable[[], None] | None = None
    ) -> None:
        """Queue a response; `before_send` runs on the sender thread just before it is sent (for the
        final one: stop asking the request `is_cancelled()`, which must never follow the final send)."""
        delivery = _Delivery(sender, payload, final, before_send)
        key = id(sender)
        with self._lock:
            queued = self._queued.get(key)
            if queued is not None:
                queued.append(delivery)
                return
            self._queued[key] = [delivery]
            if key not in self._in_flight:
                self._ready.append(key)
                self._lock.notify()

    def close(self, timeout: float) -> None:
        """Send what is queued, then stop the threads."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._ready:
                    if self._closing:
                        return
                    self._lock.wait()
                key = self._ready.popleft()
                batch = self._queued.pop(key)
                self._in_flight.add(key)
            try:
                for item in self._merged(batch):
                    self._deliver(item)
            finally:
                with self._lock:
                    self._in_flight.discard(key)
                    if key in self._queued:  # queued while this thread was sending: its turn again
                        self._ready.append(key)
                        self._lock.notify()

    def _merged(self, batch: list[_Delivery[_Payload]]) -> list[_Delivery[_Payload]]:
        if self._merge is None or len(batch) == 1:
            return batch
        out = [batch[0]]
        for item in batch[1:]:
            last = out[-1]
            joined = None if last.final else self._joined(last.payload, item.payload)
            if joined is None:
                out.append(item)
            else:
                out[-1] = _Delivery(item.sender, joined, item.final, _chained(last.before_send, item.before_send))
        return out

    def _joined(self, earlier: _Payload, later: _Payload) -> _Payload | None:
        assert self._merge is not None
        try:
            return self._merge(earlier, later)
        except Exception as error:  # never lose a response over a failed merge: send both as they are
            self._report(f"gpt_oss: responses not merged: {error!r}")
            return None

    def _deliver(self, item: _Delivery[_Payload]) -> None:
        try:
            if item.before_send is not None:
                item.before_send()
            response = self._make_response(item.payload)
            item.sender.send(response, flags=self._final_flag if item.final else 0)
            self.sent += 1
        except Exception as error:  # the client may be gone; the thread must keep serving the others
            self._report(f"gpt_oss: response not delivered: {error!r}")


def _chained(first: Callable[[], None] | None, second: Callable[[], None] | None) -> Callable[[], None] | None:
    if first is None or second is None:
        return first or second

    def both() -> None:
        first()
        second()

    return both


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
