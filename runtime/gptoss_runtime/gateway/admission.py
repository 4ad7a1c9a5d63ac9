"""Admission control: how much work the gateway takes on, and what it answers beyond that.

A generation holds a slot from its request until its last byte is written. The slots come from the
serving plan: `max_running` is the engine's batch size (the planner has already cut it to what the KV
cache holds at `maxSeqLen`), and `max_queued` more may wait for the engine, one batch deep: a request
beyond that would wait longer than a whole batch takes to finish, so it is refused at once with 429 and
`Retry-After`, and the client (or the load balancer) can try another replica. Request bodies are
bounded in bytes held at once as well as one by one, so that a burst of large bodies cannot take the
gateway past its memory limit. While the gateway drains (SIGTERM) or Triton is unreachable, a new
generation gets 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from gptoss_runtime.gateway.openai_api import ApiError
from gptoss_runtime.plan import ServingPlan

DEFAULT_MAX_RUNNING: Final = 64  # the planner's default batch size, for a gateway started without a plan
DEFAULT_BODY_BYTES_IN_FLIGHT: Final = 64 * 1024 * 1024
RETRY_AFTER_SECONDS: Final = 1


@dataclass(frozen=True)
class AdmissionLimits:
    max_running: int = DEFAULT_MAX_RUNNING
    max_queued: int = DEFAULT_MAX_RUNNING
    body_bytes_in_flight: int = DEFAULT_BODY_BYTES_IN_FLIGHT
    retry_after_s: int = RETRY_AFTER_SECONDS

    def __post_init__(self) -> None:
        if self.max_running < 1 or self.max_queued < 0 or self.body_bytes_in_flight < 1:
            raise ValueError(
                "admission limits: max_running must be at least 1, max_queued at least 0 and "
                f"body_bytes_in_flight at least 1 (got {self.max_running}, {self.max_queued}, "
                f"{self.body_bytes_in_flight})"
            )

    @property
    def max_in_flight(self) -> int:
        return self.max_running + self.max_queued

    @classmethod
    def from_plan(cls, plan: ServingPlan, body_bytes_in_flight: int = DEFAULT_BODY_BYTES_IN_FLIGHT) -> AdmissionLimits:
        batch = plan.engine.max_batch_size
        return cls(max_running=batch, max_queued=batch, body_bytes_in_flight=body_bytes_in_flight)


class OverloadedError(ApiError):
    """429 in OpenAI's shape, with the seconds to wait."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(429, message, error_type="requests", code="rate_limit_exceeded")
        self.retry_after_s = retry_after_s


class UnavailableError(ApiError):
    """503 in OpenAI's shape, with the seconds to wait."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(503, message, error_type="server_error", code="service_unavailable")
        self.retry_after_s = retry_after_s


class Admission:
    """Counts generations and body bytes in flight; used from the gateway's one event loop."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.body_bytes = 0
        self.draining = False
        self.admitted = 0
        self.refused = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def slot(self, body_bytes: int) -> Iterator[None]:
        """Hold a generation slot (and its body's bytes) for the `with` block, or raise 429/503."""
        self._check(body_bytes)
        self.in_flight += 1
        self.body_bytes += body_bytes
        self.admitted += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.body_bytes -= body_bytes
            if self.in_flight == 0:
                self._idle.set()

    def start_draining(self) -> None:
        self.draining = True

    async def wait_until_idle(self, timeout_s: float) -> bool:
        """True when every admitted generation has finished within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _check(self, body_bytes: int) -> None:
        limits = self.limits
        if self.draining:
            self.refused += 1
            raise UnavailableError(
                "this server is shutting down; retry (another replica will answer)", limits.retry_after_s
            )
        if self.in_flight >= limits.max_in_flight:
            self.refused += 1
            raise OverloadedError(
                f"the server is at capacity ({limits.max_running} generations running and {limits.max_queued} "
                "waiting); retry after the time in the Retry-After header",
                limits.retry_after_s,
            )
        if self.body_bytes + body_bytes > limits.body_bytes_in_flight:
            self.refused += 1
            raise OverloadedError(
                f"the server holds {self.body_bytes} bytes of request bodies (limit {limits.body_bytes_in_flight}); "
                "retry after the time in the Retry-After header",
                limits.retry_after_s,
            )
