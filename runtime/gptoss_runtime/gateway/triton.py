"""The gateway's way to Triton: Triton's bidirectional `ModelStreamInfer` gRPC call, over one channel.

The calls are long-lived and pooled: a generation borrows an idle call, writes its request, reads its
responses up to the one with a finish reason and gives the call back. Opening a gRPC call per request
cost about 1.5 ms on a 2-core machine (call setup, the request-iterator task, half-close and drain),
more than the gateway's whole latency budget. Requests are built as protobuf messages with their
tensors in `raw_input_contents`, without tritonclient's per-request objects.

A call carries one generation at a time, so closing the async iterator returned by
`TritonClient.generate` before the last step (the HTTP client went away, the handler was cancelled)
cancels that call alone, which Triton turns into a cancelled request that the `gpt_oss` model sees and
passes on to the engine. A cancelled call, or one that carried an error, is never reused.

Triton 2.51 does not unload the model while a call is open, so idle calls are half-closed after
`IDLE_CALL_SECONDS` unused and all of them as soon as the gateway starts to shut down
(`release_idle_calls`): a stopping tritonserver then still exits cleanly.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc  # type: ignore[import-untyped]
from grpc import RpcError
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gptoss_runtime import contract
from gptoss_runtime.triton_model import schema
from gptoss_runtime.triton_model.schema import TokenLogprobOut

_OUTPUT_NAMES: Final = (
    schema.TEXT_OUTPUT,
    schema.CHANNEL,
    schema.PROMPT_TOKENS,
    schema.COMPLETION_TOKENS,
    schema.FINISH_REASON,
)
_INPUT_NAMES: Final = frozenset(spec.name for spec in schema.INPUTS)
# How a TritonRequestError that means "no server to talk to" begins (the gateway answers 503).
UNREACHABLE: Final = "Triton is unreachable"
STREAM_END_TIMEOUT_SECONDS: Final = 10.0
READY_TIMEOUT_SECONDS: Final = 5.0
# Idle calls kept open for reuse; a burst above this opens calls that are closed when it ends. As many as
# the streams a replica runs at once: with 64, 256 streams finishing together closed 192 calls and
# opened 192 new ones for the next requests (call setup is the costliest part of a request here).
MAX_IDLE_CALLS: Final = 512
# An open call keeps Triton 2.51 from unloading the model, so a stopping tritonserver would wait out its
# exit timeout (25 s in production, 5 s in tests): idle calls are closed after this long unused.
IDLE_CALL_SECONDS: Final = 2.0
_MAX_MESSAGE_BYTES: Final = 2**31 - 1  # as tritonclient: the messages input can be long
_CHANNEL_OPTIONS: Final = (
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 60_000),  # notice a dead Triton connection while calls sit idle
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
_LENGTH: Final = struct.Struct("<I")
_INT32: Final = struct.Struct("<i")
_INT64: Final = struct.Struct("<q")
_FP32: Final = struct.Struct("<f")
_JSON: Final = json.JSONEncoder(ensure_ascii=False)


class TritonRequestError(Exception):
    """Triton or the model refused or failed the request. `field` is set when an input was at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class GenerationInputs:
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    reasoning_effort: str | None = None
    stop: Sequence[str] = ()
    stream: bool = True  # False: Triton sends the text gathered per channel at the end (fewer messages)
    # JSON texts of the model's `tools` and `guided` inputs, and a `current_date` override (issue 10).
    tools: str | None = None
    guided: str | None = None
    current_date: str | None = None
    raw_prompt: str | None = None  # `/v1/completions`: sent as `text_input` with `raw`, instead of messages
    logprobs: int | None = None  # None: no logprobs; k: each token's logprob and the k most likely


@dataclass(frozen=True)
class Step:
    text: str
    channel: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    logprobs: tuple[TokenLogprobOut, ...] = ()  # the text tokens of this step, when asked for


# --- requests and responses as protobuf messages ---------------------------------------------------


def _strings(values: Sequence[str]) -> bytes:
    """Triton's raw BYTES layout: each element as a 4-byte little-endian length and its bytes."""
    parts = []
    for value in values:
        encoded = value.encode("utf-8")
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def _add_input(request: Any, name: str, datatype: str, count: int, raw: bytes) -> None:
    request.inputs.add(name=name, datatype=datatype, shape=[count])
    request.raw_input_contents.append(raw)


def build_request(model: str, request_id: str, inputs: GenerationInputs) -> Any:
    """The `ModelInferRequest` for one generation (only the inputs the caller set; the model defaults the rest)."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    if inputs.raw_prompt is not None:
        _add_input(request, schema.TEXT_INPUT, "BYTES", 1, _strings([inputs.raw_prompt]))
        _add_input(request, schema.RAW, "BOOL", 1, b"\x01")
    else:
        _add_input(request, schema.MESSAGES, "BYTES", 1, _strings([_JSON.encode(inputs.messages)]))
    if inputs.max_tokens is not None:
        _add_input(request, schema.MAX_TOKENS, "INT32", 1, _INT32.pack(inputs.max_tokens))
    if inputs.temperature is not None:
        _add_input(request, schema.TEMPERATURE, "FP32", 1, _FP32.pack(inputs.temperature))
    if inputs.top_p is not None:
        _add_input(request, schema.TOP_P, "FP32", 1, _FP32.pack(inputs.top_p))
    if inputs.seed is not None:
        _add_input(request, schema.SEED, "INT64", 1, _INT64.pack(inputs.seed))
    if inputs.reasoning_effort is not None:
        _add_input(request, schema.REASONING_EFFORT, "BYTES", 1, _strings([inputs.reasoning_effort]))
    if inputs.stop:
        _add_input(request, schema.STOP, "BYTES", len(inputs.stop), _strings(inputs.stop))
    if not inputs.stream:
        _add_input(request, schema.STREAM, "BOOL", 1, b"\x00")
    texts = ((schema.TOOLS, inputs.tools), (schema.GUIDED, inputs.guided), (schema.CURRENT_DATE, inputs.current_date))
    for name, text in texts:
        if text is not None:
            _add_input(request, name, "BYTES", 1, _strings([text]))
    if inputs.logprobs is not None:
        _add_input(request, schema.LOGPROBS, "INT32", 1, _INT32.pack(inputs.logprobs))
    for name in _OUTPUT_NAMES:
        request.outputs.add(name=name)
    if inputs.logprobs is not None:
        request.outputs.add(name=schema.LOGPROBS)
    return request


def decode_step(response: Any) -> Step:
    """Read the step straight from a `ModelInferResponse`'s raw output buffers (each output is one
    element: BYTES as a 4-byte little-endian length and the bytes, INT32 as 4 bytes). It runs once per
    generated token, so it avoids numpy and tritonclient's result objects."""
    raw = response.raw_output_contents
    values: dict[str, bytes] = {output.name: raw[index] for index, output in enumerate(response.outputs)}

    def text(name: str) -> str:
        buffer = values[name]
        (length,) = _LENGTH.unpack_from(buffer, 0)
        return buffer[4 : 4 + length].decode("utf-8")

    def number(name: str) -> int:
        return int(_INT32.unpack_from(values[name], 0)[0])

    return Step(
        text=text(schema.TEXT_OUTPUT),
        channel=text(schema.CHANNEL),
        prompt_tokens=number(schema.PROMPT_TOKENS),
        completion_tokens=number(schema.COMPLETION_TOKENS),
        finish_reason=text(schema.FINISH_REASON),
        logprobs=schema.parse_logprob_json(text(schema.LOGPROBS)) if schema.LOGPROBS in values else (),
    )


def _error_field(message: str) -> str | None:
    """The model's input errors read `<input>: <problem>` (see `triton_model.service.InputError`)."""
    head = message.split(":", 1)[0].split("[", 1)[0].strip()
    return head if head in _INPUT_NAMES else None


def _rpc_failure(error: RpcError) -> TritonRequestError:
    details = error.details() if hasattr(error, "details") else str(error)
    return TritonRequestError(f"{UNREACHABLE} or failed: {details}")


async def _end_call(call: Any) -> None:
    """Half-close a finished call and read it to its end. A finished call must not be cancelled: a
    cancel that reaches Triton 2.51 after the final response leaves it unable to unload the model at
    shutdown."""
    try:
        async with asyncio.timeout(STREAM_END_TIMEOUT_SECONDS):
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
    except (TimeoutError, RpcError):
        call.cancel()


# --- the client ------------------------------------------------------------------------------------


@dataclass
class _IdleCall:
    call: Any
    expiry: asyncio.TimerHandle | None = None


class TritonClient:
    def __init__(self, url: str, model: str = contract.TRITON_MODEL_NAME) -> None:
        self._channel = grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._model = model
        self._idle: list[_IdleCall] = []  # open calls with no generation in flight, most recent last
        self._ending: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def idle_calls(self) -> int:
        """Open gRPC calls waiting for the next generation."""
        return len(self._idle)

    async def is_ready(self) -> bool:
        request = service_pb2.ModelReadyRequest(name=self._model)
        try:
            response = await self._stub.ModelReady(request, timeout=READY_TIMEOUT_SECONDS)
        except RpcError:
            return False
        return bool(response.ready)

    def release_idle_calls(self) -> None:
        """Shutting down: close the idle calls now, and each busy one when its generation ends."""
        self._closing = True
        idle, self._idle = self._idle, []
        for entry in idle:
            if entry.expiry is not None:
                entry.expiry.cancel()
            self._end_in_background(entry.call)

    async def close(self) -> None:
        self.release_idle_calls()
        if self._ending:
            await asyncio.wait(self._ending, timeout=STREAM_END_TIMEOUT_SECONDS + 1)
        await self._channel.close()

    async def generate(self, request_id: str, inputs: GenerationInputs) -> AsyncGenerator[Step, None]:
        """Steps until (and including) the one with a finish reason."""
        request = build_request(self._model, request_id, inputs)
        call, response = await self._start(request)
        completed = False
        reusable = True
        try:
            while True:
                if response is grpc.aio.EOF:
                    raise TritonRequestError("Triton closed the stream before the last response")
                if response.error_message:
                    completed = True  # an error response is the request's last
                    reusable = False  # a stopping Triton refuses requests: let it see the call end
                    raise TritonRequestError(response.error_message, _error_field(response.error_message))
                if response.infer_response.id == request_id:  # else a stray reply to an earlier request
                    step = decode_step(response.infer_response)
                    yield step
                    if step.finish_reason:
                        completed = True
                        return
                response = await call.read()
        except RpcError as error:
            raise _rpc_failure(error) from error
        finally:
            if completed and reusable:
                self._give_back(call)
            elif completed:
                self._end_in_background(call)
            else:
                call.cancel()  # an unfinished generation: Triton cancels the request; the call is dropped

    async def _start(self, request: Any) -> tuple[Any, Any]:
        """Send the request on an idle call (or a new one) and wait for its first response."""
        while self._idle:
            entry = self._idle.pop()
            if entry.expiry is not None:
                entry.expiry.cancel()
            call = entry.call
            if call.done():
                continue
            try:
                response = await self._send(call, request)
            except (RpcError, asyncio.InvalidStateError):
                continue  # the call died while idle (Triton restarted, the connection dropped): try another
            if response is not grpc.aio.EOF:
                return call, response
        try:
            return await self._new_call_and_send(request)
        except RpcError as error:
            raise _rpc_failure(error) from error
        except asyncio.InvalidStateError as error:  # the call ended before the request could be written
            raise TritonRequestError(f"{UNREACHABLE} or failed: {error}") from error

    async def _new_call_and_send(self, request: Any) -> tuple[Any, Any]:
        call = self._stub.ModelStreamInfer()
        return call, await self._send(call, request)

    @staticmethod
    async def _send(call: Any, request: Any) -> Any:
        try:
            await call.write(request)
            return await call.read()
        except BaseException:
            call.cancel()  # failed or abandoned before its first response: never reuse it
            raise

    def _give_back(self, call: Any) -> None:
        if call.done():
            return
        if self._closing or len(self._idle) >= MAX_IDLE_CALLS:
            self._end_in_background(call)
            return
        entry = _IdleCall(call)
        entry.expiry = asyncio.get_running_loop().call_later(IDLE_CALL_SECONDS, self._expire, entry)
        self._idle.append(entry)

    def _expire(self, entry: _IdleCall) -> None:
        if entry in self._idle:
            self._idle.remove(entry)
            self._end_in_background(entry.call)

    def _end_in_background(self, call: Any) -> None:
        task = asyncio.get_running_loop().create_task(_end_call(call))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
