"""Running the gateway until SIGTERM, then draining: readiness fails first, in-flight streams finish.

On SIGTERM (or SIGINT) the gateway keeps listening but stops admitting: `/readyz` answers 503 (so the
Service stops sending traffic) and a new generation gets 503 with `Retry-After`; the generations
already admitted run to their end, up to `drain_timeout_s`; then the server closes. tritonserver, which
gets its own SIGTERM in the same pod, waits for the calls still open to it (its exit timeout), so the
streams in flight complete end to end. Kubernetes' grace period must cover the drain timeout.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Final

from aiohttp import web

from gptoss_runtime.gateway.admission import Admission

log = logging.getLogger(__name__)

# Under Kubernetes' default 30 s grace period, leaving time for the server to close.
DRAIN_TIMEOUT_SECONDS: Final = 20.0
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


async def serve_until_terminated(
    runner: web.AppRunner,
    host: str,
    port: int,
    admission: Admission,
    *,
    on_drain: Callable[[], None] = lambda: None,
    drain_timeout_s: float = DRAIN_TIMEOUT_SECONDS,
) -> None:
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    terminated = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in _STOP_SIGNALS:
        loop.add_signal_handler(stop_signal, terminated.set)
    try:
        await terminated.wait()
        admission.start_draining()
        on_drain()
        log.info("draining: %d generation(s) in flight", admission.in_flight)
        if not await admission.wait_until_idle(drain_timeout_s):
            log.warning("drain timed out after %.0f s with %d generation(s) left", drain_timeout_s, admission.in_flight)
    finally:
        for stop_signal in _STOP_SIGNALS:
            loop.remove_signal_handler(stop_signal)
        await runner.cleanup()
