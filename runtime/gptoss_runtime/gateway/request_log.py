"""One INFO line per finished generation request, as `key=value` pairs (grep- and parse-friendly):

    request endpoint=/v1/chat/completions id=chatcmpl-... model=gpt-oss-20b status=200 finish=stop
    stream=true prompt_tokens=12 completion_tokens=40 ttft_ms=3.1 total_ms=55.2 pod=gpt-oss-20b-7f9c-x2

Written once when the request ends (never per token), from counters the handler updates per step.
`status` is the HTTP status (499 when the client went away first); `finish` the finish reason, or
`error` when a stream failed after its 200. No header, body or key is ever logged. `pod` is the
host name (the pod's name in Kubernetes): the line says which replica answered.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gptoss_runtime.gateway.errors import ApiError
from gptoss_runtime.gateway.triton import Step

log = logging.getLogger("gptoss_runtime.gateway.requests")

CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for "the client went away before the answer"
_POD: Final = socket.gethostname()


@dataclass
class RequestRecord:
    endpoint: str
    model: str
    started: float  # time.monotonic()
    response_id: str = "-"
    stream: bool = False
    first_token_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str = "-"

    def begin(self, response_id: str, *, stream: bool) -> None:
        self.response_id, self.stream = response_id, stream

    async def observe(self, steps: AsyncGenerator[Step, None]) -> AsyncGenerator[Step, None]:
        """`steps`, counted on their way through (time of the first token, tokens, finish reason);
        closing this closes `steps` too (which cancels an unfinished Triton call)."""
        async with aclosing(steps):
            async for step in steps:
                if self.first_token_at is None:
                    self.first_token_at = time.monotonic()
                self.prompt_tokens, self.completion_tokens = step.prompt_tokens, step.completion_tokens
                if step.finish_reason:
                    self.finish = step.finish_reason
                yield step

    def failed(self) -> None:
        """The stream failed after its 200 was sent."""
        self.finish = "error"

    def line(self, status: int) -> str:
        now = time.monotonic()
        ttft = "-" if self.first_token_at is None else f"{(self.first_token_at - self.started) * 1000:.1f}"
        return (
            f"request endpoint={self.endpoint} id={self.response_id} model={self.model} status={status} "
            f"finish={self.finish} stream={str(self.stream).lower()} prompt_tokens={self.prompt_tokens} "
            f"completion_tokens={self.completion_tokens} ttft_ms={ttft} total_ms={(now - self.started) * 1000:.1f} "
            f"pod={_POD}"
        )


_RECORD_KEY: Final = web.RequestKey("gptoss_request_record", RequestRecord)


def record_of(request: web.Request) -> RequestRecord | None:
    return request.get(_RECORD_KEY)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_log_middleware(model: str, endpoints: frozenset[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Outermost middleware: sees the final status of every request to `endpoints` (POST), errors and
    refusals (401, 429, 503) included, and logs its line."""

    @web.middleware
    async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in endpoints:
            return await handler(request)
        record = RequestRecord(request.path, model, time.monotonic())
        request[_RECORD_KEY] = record
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except ApiError as error:
            status = error.status
            raise
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            log.info(record.line(status))

    return request_log
