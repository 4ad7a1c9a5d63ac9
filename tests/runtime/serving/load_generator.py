"""A bounded load generator for the `gpt_oss` Triton model: N concurrent streaming requests over gRPC.

Each of `concurrency` workers sends one streaming request after the other until `stop()` or the deadline,
so the server holds about `concurrency` requests at any time (running up to its batch limit, the rest
waiting). `stop()` cancels the requests in flight, so the load ends at once. It runs on its own event
loop in a thread, so synchronous tests (the e2e ones) can use it as a context manager too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from serving_clients import ModelError, stream

PROMPT = "Write a long story about a lighthouse keeper."
MAX_DURATION_S = 300.0  # a forgotten generator stops by itself


@dataclass
class LoadStats:
    started: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    first_token_seconds: list[float] = field(default_factory=list)


class LoadGenerator:
    """`concurrency` streaming requests in flight until stopped (at most `max_duration_s`)."""

    def __init__(
        self, grpc_url: str, *, concurrency: int, max_tokens: int = 256, max_duration_s: float = MAX_DURATION_S
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.grpc_url = grpc_url
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.max_duration_s = max_duration_s
        self.stats = LoadStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self._thread.start()
        if not self._running.wait(timeout=10):
            raise RuntimeError("the load generator's event loop did not start")
        return self

    def stop(self, timeout_s: float = 30.0) -> LoadStats:
        """Cancel the requests in flight and wait for the workers to end."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended (deadline)
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the load generator did not stop within {timeout_s:g} s")
        return self.stats

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- the loop
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._running.set()
        workers = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=self.max_duration_s)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, index: int) -> None:
        request = 0
        while True:
            request += 1
            self.stats.started += 1
            sent = time.monotonic()
            first = True
            try:
                async for _response in stream(
                    self.grpc_url, text_input=PROMPT, max_tokens=self.max_tokens, seed=index * 1000 + request
                ):
                    if first:
                        self.stats.first_token_seconds.append(time.monotonic() - sent)
                        first = False
                self.stats.completed += 1
            except ModelError as error:
                self.stats.errors.append(str(error))
                await asyncio.sleep(0.1)  # do not spin on a refusing server
