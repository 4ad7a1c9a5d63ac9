"""The gateway's front door: API keys, then admission, for every route but the probes.

`GuardSettings` is what the command line sets; `Guard` holds the live state (the keys, re-read on
change, and the admission counters) on the aiohttp application; `guard_middleware` applies both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gptoss_runtime.gateway.admission import Admission, AdmissionLimits
from gptoss_runtime.gateway.auth import ApiKeys
from gptoss_runtime.gateway.drain import DRAIN_TIMEOUT_SECONDS
from gptoss_runtime.plan import ServingPlan

# Probes and health: kubelet and load balancers call them without a key, and they never generate.
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True)
class GuardSettings:
    api_keys_path: Path | None = None
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    drain_timeout_s: float = DRAIN_TIMEOUT_SECONDS


class Guard:
    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings
        self.keys = ApiKeys(settings.api_keys_path) if settings.api_keys_path is not None else None
        self.admission = Admission(settings.admission)

    @property
    def draining(self) -> bool:
        return self.admission.draining


GUARD_KEY: Final = web.AppKey("guard", Guard)


def guard_middleware(max_body_bytes: int) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        state = request.app[GUARD_KEY]
        if state.keys is not None:
            state.keys.check(request.headers.get("Authorization"))
        if request.method != "POST":  # listing models costs nothing: no slot
            return await handler(request)
        declared = request.content_length
        body_bytes = max_body_bytes if declared is None else min(declared, max_body_bytes)
        with state.admission.slot(body_bytes):  # held until the last byte of a stream is written
            return await handler(request)

    return guard


def guard_settings(
    *,
    api_keys: Path | None,
    plan_file: Path | None,
    max_running: int | None,
    max_queued: int | None,
    drain_timeout_s: float | None,
) -> GuardSettings:
    """Settings from the command line: admission limits from the plan's batch size unless given.
    Raises ValueError naming the flag at fault."""
    if api_keys is not None and not api_keys.exists():
        raise ValueError(f"--api-keys: {api_keys} does not exist (mount the API-keys Secret there)")
    limits = AdmissionLimits()
    if plan_file is not None:
        try:
            limits = AdmissionLimits.from_plan(ServingPlan.load(plan_file))
        except (OSError, ValueError) as error:
            raise ValueError(f"--plan: {plan_file} is not a readable serving plan: {error}") from error
    try:
        limits = replace(
            limits,
            max_running=limits.max_running if max_running is None else max_running,
            max_queued=limits.max_queued if max_queued is None else max_queued,
        )
    except ValueError as error:
        raise ValueError(f"--max-running/--max-queued: {error}") from error
    return GuardSettings(
        api_keys_path=api_keys,
        admission=limits,
        drain_timeout_s=DRAIN_TIMEOUT_SECONDS if drain_timeout_s is None else drain_timeout_s,
    )
