"""Getting responses to Triton and noticing cancelled requests, off the engine's event loop.

Both `ResponseSender.send()` and `request.is_cancelled()` are blocking round trips from the Python-backend
stub to the Triton server. Made on the event loop that also drives the engine, they stall every request
for each one of them. So (as NVIDIA's own Triton model for the LLM API does):

- `Outbox`: one sender thread. The engine's loop only queues `(sender, payload, final)`; the thread builds
  the responses and sends them, everything queued at once per wake-up, in queue order (so each request's
  responses keep their order). A send that fails (the client is gone) is reported and dropped.
- `CancellationSweep`: one thread asks every request in flight `is_cancelled()` once per period, and
  cancels the engine-loop task of each cancelled one. Requests no longer ask for
  themselves, so the cost is one question per request per period, none on the engine's loop.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

CANCEL_SWEEP_SECONDS: Final = 0.1
_STOP: Final = object()
_Payload = TypeVar("_Payload")

ResponseFactory = Callable[[Any], Any]  # payload -> pb_utils.InferenceResponse
ErrorReporter = Callable[[str], None]


@dataclass(frozen=True)
class _Delivery(Generic[_Payload]):
    sender: Any
    payload: _Payload
    final: bool


class Outbox(Generic[_Payload]):
    """Sends responses from one thread of its own; `put` never blocks."""

    def __init__(
        self,
        make_response: Callable[[_Payload], Any],
        final_flag: int,
        report: ErrorReporter,
        name: str = "gpt_oss-sender",
    ) -> None:
        self._make_response = make_response
        self._final_flag = final_flag
        self._report = report
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.sent = 0

    def put(self, sender: Any, payload: _Payload, *, final: bool) -> None:
        self._queue.put(_Delivery(sender, payload, final))

    def close(self, timeout: float) -> None:
        """Send what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:  # take everything queued meanwhile: one wake-up per burst, not per response
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in batch:
                if item is _STOP:
                    return
                self._deliver(item)

    def _deliver(self, item: _Delivery[_Payload]) -> None:
        try:
            response = self._make_response(item.payload)
            item.sender.send(response, flags=self._final_flag if item.final else 0)
            self.sent += 1
        except Exception as error:  # the client may be gone; the thread must keep serving the others
            self._report(f"gpt_oss: response not delivered: {error!r}")


class CancellationSweep:
    """Asks every watched request `is_cancelled()` once per period, from one thread, and calls the
    `cancel` of each cancelled one (once)."""

    def __init__(self, period_s: float = CANCEL_SWEEP_SECONDS, name: str = "gpt_oss-cancel") -> None:
        self._period_s = period_s
        self._watched: dict[int, tuple[Callable[[], bool], Callable[[], None]]] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
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
        with self._lock:
            self._watched.pop(key, None)

    def close(self, timeout: float) -> None:
        self._stopped.set()
        self._thread.join(timeout)

    def sweep(self) -> int:
        """One pass over the watched requests; returns how many were cancelled."""
        with self._lock:
            watched = list(self._watched.items())
        cancelled = 0
        for key, (is_cancelled, cancel) in watched:
            try:
                gone = is_cancelled()
            except Exception:  # a request the server has released already: nothing left to cancel
                gone = False
            if gone:
                self.forget(key)
                cancel()
                cancelled += 1
        return cancelled

    def _run(self) -> None:
        while not self._stopped.wait(self._period_s):
            self.sweep()
