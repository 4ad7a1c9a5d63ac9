"""The OpenAI-compatible gateway (aiohttp): `/v1/chat/completions`, `/v1/responses`, `/v1/models`,
`/healthz` (the process is up) and `/readyz` (Triton's `gpt_oss` model is ready).

Each generation is one gRPC stream to Triton. aiohttp runs with handler cancellation, so a client
that disconnects cancels its handler, which closes the Triton stream, which cancels the engine request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import gc
import json
import logging
import os
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gptoss_runtime import contract
from gptoss_runtime.gateway.admission import RETRY_AFTER_SECONDS, UnavailableError
from gptoss_runtime.gateway.completions import completion_object, completion_usage, parse_completions
from gptoss_runtime.gateway.drain import serve_until_terminated
from gptoss_runtime.gateway.guard import GUARD_KEY, Guard, GuardSettings, guard_middleware
from gptoss_runtime.gateway.logprobs import CompletionLogprobs
from gptoss_runtime.gateway.openai_api import (
    ApiError,
    Limits,
    ParsedRequest,
    Transcript,
    chat_chunk,
    chat_completion,
    new_id,
    parse_chat,
    usage,
)
from gptoss_runtime.gateway.request_log import record_of, request_log_middleware
from gptoss_runtime.gateway.responses import ResponseBuilder, ResponsesState, conversation, parse_responses
from gptoss_runtime.gateway.store import RESPONSES_STORE_ENV, open_store
from gptoss_runtime.gateway.triton import UNREACHABLE, GenerationInputs, Step, TritonClient, TritonRequestError
from gptoss_runtime.triton_model import schema
from gptoss_runtime.triton_model.schema import TokenLogprobOut

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS_LIMIT: Final = 131_072  # gpt-oss context length; the model refuses more than its plan's
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# On SIGTERM, in-flight generations get this long to finish (under Kubernetes' 30 s grace period).
SHUTDOWN_TIMEOUT_SECONDS: Final = 20.0
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CLIENT_KEY: Final = web.AppKey("triton_client", TritonClient)
_STARTED_KEY: Final = web.AppKey("started", int)
_RESPONSES_KEY: Final = web.AppKey("responses_state", ResponsesState)
# The routes that generate: each finished request to one of them gets one log line (gateway.request_log).
GENERATION_ENDPOINTS: Final = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})


class GatewayError(Exception):
    """The gateway cannot start as configured."""


@dataclass(frozen=True)
class GatewayConfig:
    triton_grpc: str
    model_name: str
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    responses_store_url: str | None = None  # a shared Redis for stored responses; None: this process's memory

    @classmethod
    def from_cli(
        cls, *, triton_grpc: str, model_name: str | None, weights: Path | None, max_tokens_limit: int | None
    ) -> GatewayConfig:
        if model_name is None and weights is None:
            raise GatewayError("give --model-name (gpt-oss-20b or gpt-oss-120b) or --weights DIR to read it from")
        if model_name is None and weights is not None:
            model_name = _model_name_from_weights(weights)
        assert model_name is not None
        return cls(
            triton_grpc=triton_grpc,
            model_name=model_name,
            max_tokens_limit=max_tokens_limit or DEFAULT_MAX_TOKENS_LIMIT,
            responses_store_url=os.environ.get(RESPONSES_STORE_ENV) or None,
        )

    @property
    def limits(self) -> Limits:
        return Limits(model_name=self.model_name, max_tokens_limit=self.max_tokens_limit)


_CONFIG_KEY: Final = web.AppKey("gateway_config", GatewayConfig)


def _model_name_from_weights(weights: Path) -> str:
    from gptoss_runtime import checkpoint

    try:
        name = checkpoint.checkpoint_model_name(checkpoint.read_config(weights))
    except checkpoint.CheckpointError as error:
        raise GatewayError(f"--weights: {error}") from error
    if name is None:
        raise GatewayError(f"--weights: cannot tell which gpt-oss model {weights} holds; pass --model-name")
    return name


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once: it is per-token work


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(value), status=status, content_type="application/json")


def _config(request: web.Request) -> GatewayConfig:
    return request.app[_CONFIG_KEY]


# --- middleware: every error in OpenAI's shape -----------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        response = _json(error.body(), error.status)
        retry_after = getattr(error, "retry_after_s", None)  # 429 and 503 say when to come back
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        api_error = ApiError(error.status, f"{request.method} {request.path}: {error.reason}")
        return _json(api_error.body(), error.status)


async def _read_json(request: web.Request) -> Any:
    limit = _config(request).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the request body has {request.content_length} bytes; the limit is {limit}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise ApiError(413, f"the request body exceeds the limit of {limit} bytes") from error
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from error


def _upstream_error(error: TritonRequestError) -> ApiError:
    if error.field is not None:
        return ApiError(400, str(error), param=error.field, code=schema.error_code(str(error)))
    if str(error).startswith(UNREACHABLE):  # not ready yet, or restarting: a retry is the answer
        return UnavailableError(f"the model server is not available: {error}", RETRY_AFTER_SECONDS)
    return ApiError(502, f"the model server failed: {error}", error_type="server_error")


def _generate(
    request: web.Request, response_id: str, inputs: GenerationInputs, stream: bool
) -> AsyncGenerator[Step, None]:
    """The Triton stream of one generation, counted for the request's log line. The caller closes it
    (`aclosing`): closing it closes the gRPC call too."""
    generation = request.app[_CLIENT_KEY].generate(response_id, inputs)
    record = record_of(request)
    if record is None:
        return generation
    record.begin(response_id, stream=stream)
    return record.observe(generation)


def _stream_failed(request: web.Request) -> None:
    record = record_of(request)
    if record is not None:
        record.failed()


async def _first_step(steps: AsyncIterator[Step]) -> Step:
    """Wait for the first step before answering, so that a refused request still gets a 4xx."""
    try:
        return await anext(steps)
    except TritonRequestError as error:
        raise _upstream_error(error) from error
    except StopAsyncIteration as error:
        raise ApiError(502, "the model server ended the stream without output", error_type="server_error") from error


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers=_SSE_HEADERS)
    await response.prepare(request)
    return response


def _sse_event(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\ndata: ".encode() if event else b"data: "
    return head + _dumps(payload) + b"\n\n"


class _SseWriter:
    """Gathers the events of one step and sends them in one write (a write is a syscall and a chunk)."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.pending: list[bytes] = []

    def add(self, payload: Any, event: str | None = None) -> None:
        self.pending.append(_sse_event(payload, event))

    async def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            await self.response.write(data)


# --- routes ----------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    # Draining fails readiness first, so that the Service stops sending traffic while streams finish.
    ready = not request.app[GUARD_KEY].draining and await request.app[_CLIENT_KEY].is_ready()
    return _json({"ready": ready, "model": contract.TRITON_MODEL_NAME}, 200 if ready else 503)


def _model_card(config: GatewayConfig, created: int) -> dict[str, Any]:
    return {"id": config.model_name, "object": "model", "created": created, "owned_by": "openai"}


async def list_models(request: web.Request) -> web.Response:
    config = _config(request)
    return _json({"object": "list", "data": [_model_card(config, request.app[_STARTED_KEY])]})


async def get_model(request: web.Request) -> web.Response:
    config = _config(request)
    model = request.match_info["model"]
    if model != config.model_name:
        raise ApiError(404, f"model {model!r} does not exist here", param="model", code="model_not_found")
    return _json(_model_card(config, request.app[_STARTED_KEY]))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config = _config(request)
    parsed = parse_chat(await _read_json(request), config.limits)
    completion_id = new_id("chatcmpl-")
    created = int(time.time())
    steps = _generate(request, completion_id, parsed.inputs, parsed.stream)
    async with aclosing(steps):
        first = await _first_step(steps)
        if parsed.stream:
            return await _stream_chat(request, parsed, completion_id, created, first, steps)
        transcript = Transcript()
        transcript.add(first)
        try:
            async for step in steps:
                transcript.add(step)
        except TritonRequestError as error:
            raise _upstream_error(error) from error
        wants_logprobs = parsed.inputs.logprobs is not None
        return _json(chat_completion(completion_id, created, config.model_name, transcript, logprobs=wants_logprobs))


async def _stream_chat(
    request: web.Request,
    parsed: ParsedRequest,
    completion_id: str,
    created: int,
    first: Step,
    steps: AsyncIterator[Step],
) -> web.StreamResponse:
    model = _config(request).model_name
    sse = _SseWriter(await _sse(request))
    sse.add(chat_chunk(completion_id, created, model, {"role": "assistant", "content": ""}))
    transcript = Transcript()
    wants_logprobs = parsed.inputs.logprobs is not None

    async def send(step: Step) -> None:
        delta = transcript.add(step)
        logprobs = transcript.step_logprobs if wants_logprobs and transcript.step_logprobs else None
        if delta is not None or logprobs is not None:  # text held back by a stop string: logprobs first
            sse.add(chat_chunk(completion_id, created, model, delta or {"content": ""}, None, logprobs))
        if step.finish_reason:
            sse.add(chat_chunk(completion_id, created, model, {}, transcript.chat_finish_reason))
        else:  # the last step's chunks go out with the usage and [DONE]
            await sse.flush()

    try:
        await send(first)
        async for step in steps:
            await send(step)
    except TritonRequestError as error:
        _stream_failed(request)
        sse.add(_upstream_error(error).body())
        await sse.flush()
        return sse.response
    if parsed.include_usage:
        chunk = chat_chunk(completion_id, created, model, {})
        chunk["choices"] = []
        chunk["usage"] = usage(transcript.prompt_tokens, transcript.completion_tokens, transcript.reasoning_tokens)
        sse.add(chunk)
    sse.pending.append(b"data: [DONE]\n\n")
    await sse.flush()
    return sse.response


async def completions(request: web.Request) -> web.StreamResponse:
    """`/v1/completions`: raw prompt in, plain text out (see `gateway.completions`)."""
    config = _config(request)
    parsed = parse_completions(await _read_json(request), config.limits)
    completion_id, created, model = new_id("cmpl-"), int(time.time()), config.model_name
    logprobs = CompletionLogprobs() if parsed.inputs.logprobs is not None else None
    steps = _generate(request, completion_id, parsed.inputs, parsed.stream)
    async with aclosing(steps):
        step = await _first_step(steps)
        sse = _SseWriter(await _sse(request)) if parsed.stream else None
        texts: list[str] = []
        entries: list[TokenLogprobOut] = []
        try:
            while True:
                texts.append(step.text)
                entries.extend(step.logprobs)
                if sse is not None and (step.text or step.finish_reason or step.logprobs):
                    shaped = None if logprobs is None else logprobs.shape(step.logprobs)
                    sse.add(
                        completion_object(completion_id, created, model, step.text, step.finish_reason or None, shaped)
                    )
                    await sse.flush()
                if step.finish_reason:
                    break
                step = await anext(steps)
        except TritonRequestError as error:
            if sse is None:
                raise _upstream_error(error) from error
            _stream_failed(request)
            sse.add(_upstream_error(error).body())
            await sse.flush()
            return sse.response
        counts = completion_usage(step.prompt_tokens, step.completion_tokens)
        if sse is None:
            shaped = None if logprobs is None else logprobs.shape(entries)
            return _json(
                {
                    **completion_object(completion_id, created, model, "".join(texts), step.finish_reason, shaped),
                    "usage": counts,
                }
            )
        if parsed.include_usage:
            sse.add({**completion_object(completion_id, created, model, "", None), "choices": [], "usage": counts})
        sse.pending.append(b"data: [DONE]\n\n")
        await sse.flush()
        return sse.response


async def responses(request: web.Request) -> web.StreamResponse:
    config = _config(request)
    parsed = parse_responses(await _read_json(request), config.limits)
    state = request.app[_RESPONSES_KEY]
    talk = conversation(parsed, await state.previous(parsed.previous_response_id))
    builder = ResponseBuilder(config.model_name, parsed.echo)
    inputs = dataclasses.replace(parsed.inputs, messages=talk.model_messages)
    steps = _generate(request, builder.response_id, inputs, parsed.stream)
    async with aclosing(steps):
        first = await _first_step(steps)
        if parsed.stream:
            response = await _stream_response(request, builder, first, steps)
        else:
            builder.step_events(first)
            try:
                async for step in steps:
                    builder.step_events(step)
            except TritonRequestError as error:
                raise _upstream_error(error) from error
            response = _json(builder.response(builder.final_status()))
    if builder.error is None:
        await state.save(parsed, builder, talk)
    return response


async def get_response(request: web.Request) -> web.Response:
    return _json(await request.app[_RESPONSES_KEY].retrieve(request.match_info["response_id"]))


async def delete_response(request: web.Request) -> web.Response:
    return _json(await request.app[_RESPONSES_KEY].delete(request.match_info["response_id"]))


async def _stream_response(
    request: web.Request, builder: ResponseBuilder, first: Step, steps: AsyncIterator[Step]
) -> web.StreamResponse:
    sse = _SseWriter(await _sse(request))

    async def send(events: list[dict[str, Any]], step: Step) -> None:
        for event in events:
            sse.add(event, event["type"])
        if not step.finish_reason:  # the last step's events go out with the finishing ones
            await sse.flush()

    try:
        await send(builder.start_events() + builder.step_events(first), first)
        async for step in steps:
            await send(builder.step_events(step), step)
    except TritonRequestError as error:
        _stream_failed(request)
        failure = _upstream_error(error)
        sse.add(builder.event("error", message=failure.message, code=failure.code), "error")
        for event in builder.fail_events(failure.message, failure.code):
            sse.add(event, event["type"])
        await sse.flush()
        return sse.response
    for event in builder.finish_events():
        sse.add(event, event["type"])
    await sse.flush()
    return sse.response


# --- application -----------------------------------------------------------------------------------


def make_app(
    config: GatewayConfig, client: TritonClient | None = None, guard: GuardSettings | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[
            request_log_middleware(config.model_name, GENERATION_ENDPOINTS),  # outermost: sees every status
            _errors,
            guard_middleware(config.max_body_bytes),
        ],
        client_max_size=config.max_body_bytes,
    )
    app[GUARD_KEY] = Guard(guard or GuardSettings())
    app[_CONFIG_KEY] = config
    app[_STARTED_KEY] = int(time.time())

    async def connect(app: web.Application) -> AsyncIterator[None]:
        app[_CLIENT_KEY] = client or TritonClient(config.triton_grpc)
        app[_RESPONSES_KEY] = ResponsesState(open_store(config.responses_store_url))
        # The objects made at start-up live as long as the process: keep them out of the collector's
        # scans, which otherwise now and then stall a request for milliseconds.
        gc.freeze()
        yield
        await app[_CLIENT_KEY].close()
        await app[_RESPONSES_KEY].store.close()

    async def release_idle_calls(app: web.Application) -> None:
        # Runs when shutdown starts, before in-flight requests are awaited: a tritonserver stopping
        # alongside the gateway can unload the model only once no call to it is open.
        app[_CLIENT_KEY].release_idle_calls()

    app.cleanup_ctx.append(connect)
    app.on_shutdown.append(release_idle_calls)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    return app


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it trims the gateway's per-request overhead), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_gateway(config: GatewayConfig, *, host: str, port: int, guard: GuardSettings | None = None) -> None:
    log.info("gateway for %s on %s:%d -> triton %s", config.model_name, host, port, config.triton_grpc)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack to stderr
    app = make_app(config, guard=guard)
    runner = web.AppRunner(
        app,
        handle_signals=False,  # SIGTERM drains (gateway.drain) instead of closing the listener at once
        access_log=None,  # per-request logging costs more than the gateway's whole latency budget
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
    )
    state = app[GUARD_KEY]
    loop = _event_loop()
    try:
        loop.run_until_complete(
            serve_until_terminated(
                runner,
                host,
                port,
                state.admission,
                on_drain=lambda: app[_CLIENT_KEY].release_idle_calls(),
                drain_timeout_s=state.settings.drain_timeout_s,
            )
        )
    finally:
        loop.close()
