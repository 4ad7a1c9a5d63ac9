"""What the `gpt_oss` model does with one request, free of Triton: validate, render harmony, stream.

`GenerationService.stream` renders the chat as a harmony prompt, runs it through the engine, parses the
generated tokens back into channel deltas (analysis = reasoning, final = the answer), applies stop
strings to the answer, and reports metrics. It polls `is_cancelled` while it waits on the engine and
cancels the engine request when the client has gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from gptoss_runtime import harmony
from gptoss_runtime.engine.base import Engine, GenerationRequest, SamplingParams, TokenChunk
from gptoss_runtime.metrics import OUTCOME_CANCELLED, OUTCOME_ERROR, OUTCOME_SUCCESS, MetricsSink
from gptoss_runtime.tokenizer import Tokenizer
from gptoss_runtime.triton_model import schema

ROLES: Final = ("system", "developer", "user", "assistant", "tool")
REASONING_EFFORTS: Final = ("low", "medium", "high")
CANCEL_POLL_SECONDS: Final = 0.05
_ANSWER_CHANNEL: Final = "final"
_Number = TypeVar("_Number", int, float)


class InputError(ValueError):
    """A request the model cannot serve; the message names the input and the fix."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class ClientCancelledError(Exception):
    """The client cancelled the request (closed its stream)."""


@dataclass(frozen=True)
class ModelRequest:
    messages: tuple[harmony.ChatMessage, ...]
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    reasoning_effort: str = "medium"
    stop: tuple[str, ...] = ()
    stream: bool = True


@dataclass(frozen=True)
class StepOutput:
    text: str
    channel: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = ""  # set on the last step only


# --- request validation ----------------------------------------------------------------------------

InputGetter = Callable[[str], Any]  # name -> numpy array or None (absent optional input)


def parse_request(get: InputGetter, *, max_tokens_limit: int, default_reasoning_effort: str) -> ModelRequest:
    """Build a `ModelRequest` from the model's input tensors, or raise `InputError`."""
    text = _scalar_text(get, schema.TEXT_INPUT)
    messages_json = _scalar_text(get, schema.MESSAGES)
    if (text is None) == (messages_json is None):
        raise InputError(f"{schema.TEXT_INPUT}/{schema.MESSAGES}", "give exactly one of the two")
    messages = (
        (harmony.ChatMessage(role="user", content=text),) if text is not None else parse_messages(messages_json or "")
    )
    # Absent: up to the model's bound, as OpenAI does (the engine stops at max_seq_len).
    max_tokens = _scalar_number(get, schema.MAX_TOKENS, int, max_tokens_limit)
    if not 1 <= max_tokens <= max_tokens_limit:
        raise InputError(schema.MAX_TOKENS, f"must be between 1 and {max_tokens_limit}, got {max_tokens}")
    temperature = _scalar_number(get, schema.TEMPERATURE, float, 1.0)
    if not 0.0 <= temperature <= 2.0:
        raise InputError(schema.TEMPERATURE, f"must be between 0 and 2, got {temperature}")
    top_p = _scalar_number(get, schema.TOP_P, float, 1.0)
    if not 0.0 < top_p <= 1.0:
        raise InputError(schema.TOP_P, f"must be in (0, 1], got {top_p}")
    seed_value = get(schema.SEED)
    effort = _scalar_text(get, schema.REASONING_EFFORT) or default_reasoning_effort
    if effort not in REASONING_EFFORTS:
        raise InputError(schema.REASONING_EFFORT, f"must be one of {', '.join(REASONING_EFFORTS)}, got {effort!r}")
    return ModelRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=None if seed_value is None else int(seed_value.reshape(-1)[0]),
        reasoning_effort=effort,
        stop=_stop_strings(get),
        stream=_flag(get, schema.STREAM, default=True),
    )


def parse_messages(text: str) -> tuple[harmony.ChatMessage, ...]:
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise InputError(schema.MESSAGES, f"is not valid JSON ({error})") from error
    if not isinstance(raw, list) or not raw:
        raise InputError(schema.MESSAGES, 'must be a non-empty JSON list of {"role", "content"} objects')
    messages = []
    for index, item in enumerate(raw):
        where = f"{schema.MESSAGES}[{index}]"
        if not isinstance(item, dict):
            raise InputError(where, 'must be an object with "role" and "content"')
        role, content, name = item.get("role"), item.get("content"), item.get("name")
        if role not in ROLES:
            raise InputError(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise InputError(f"{where}.content", "must be a string")
        if name is not None and not isinstance(name, str):
            raise InputError(f"{where}.name", "must be a string")
        messages.append(harmony.ChatMessage(role=role, content=content, name=name))
    return tuple(messages)


def _scalar_text(get: InputGetter, name: str) -> str | None:
    value = get(name)
    if value is None:
        return None
    flat = value.reshape(-1)
    if flat.size != 1:
        raise InputError(name, f"must hold one element, got {flat.size}")
    item = flat[0]
    try:
        return item.decode("utf-8") if isinstance(item, bytes) else str(item)
    except UnicodeDecodeError as error:
        raise InputError(name, "is not valid UTF-8") from error


def _scalar_number(get: InputGetter, name: str, kind: type[_Number], default: _Number) -> _Number:
    value = get(name)
    if value is None:
        return default
    flat = value.reshape(-1)
    if flat.size != 1:
        raise InputError(name, f"must hold one element, got {flat.size}")
    return kind(flat[0])


def _flag(get: InputGetter, name: str, *, default: bool) -> bool:
    value = get(name)
    if value is None:
        return default
    flat = value.reshape(-1)
    if flat.size != 1:
        raise InputError(name, f"must hold one element, got {flat.size}")
    return bool(flat[0])


def _stop_strings(get: InputGetter) -> tuple[str, ...]:
    value = get(schema.STOP)
    if value is None:
        return ()
    stops = tuple(item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in value.reshape(-1))
    if any(not stop for stop in stops):
        raise InputError(schema.STOP, "stop strings must not be empty")
    return stops


# --- stop strings ----------------------------------------------------------------------------------


class StopMatcher:
    """Cuts the answer before the first stop string, holding back text that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        buffer = self._held + text
        cut = min((index for stop in self._stops if (index := buffer.find(stop)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best


# --- the service -----------------------------------------------------------------------------------


class GenerationService:
    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        metrics: MetricsSink,
        *,
        max_seq_len: int,
        cancel_poll_seconds: float = CANCEL_POLL_SECONDS,
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._metrics = metrics
        self._max_seq_len = max_seq_len
        self._cancel_poll_seconds = cancel_poll_seconds
        self._stop_token_ids = tuple(harmony.stop_token_ids(tokenizer))

    @property
    def engine(self) -> Engine:
        return self._engine

    def render(self, request: ModelRequest) -> list[int]:
        try:
            prompt = harmony.render_prompt(list(request.messages), request.reasoning_effort, self._tokenizer)
        except harmony.HarmonyError as error:
            raise InputError(schema.MESSAGES, str(error)) from error
        if len(prompt) >= self._max_seq_len:
            raise InputError(
                schema.MESSAGES,
                f"the prompt has {len(prompt)} tokens; this deployment takes at most {self._max_seq_len - 1}",
            )
        return prompt

    async def stream(
        self, request_id: str, request: ModelRequest, is_cancelled: Callable[[], bool]
    ) -> AsyncIterator[StepOutput]:
        """Steps of the completion; raises `InputError` before the first step if the prompt is too long."""
        prompt = self.render(request)
        sampling = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop_token_ids=self._stop_token_ids,
        )
        chunks = self._engine.generate(GenerationRequest(request_id, prompt, sampling))
        self._metrics.prompt_tokens(len(prompt))
        self._metrics.refresh(self._engine.stats())
        outcome = OUTCOME_ERROR
        try:
            async for step in self._steps(chunks, len(prompt), request.stop, is_cancelled):
                yield step
            outcome = OUTCOME_SUCCESS
        except (ClientCancelledError, asyncio.CancelledError):
            outcome = OUTCOME_CANCELLED
            raise
        finally:
            await _aclose(chunks)
            self._metrics.request_finished(outcome)
            self._metrics.refresh(self._engine.stats())

    async def _steps(
        self,
        chunks: AsyncIterator[TokenChunk],
        prompt_tokens: int,
        stops: Sequence[str],
        is_cancelled: Callable[[], bool],
    ) -> AsyncIterator[StepOutput]:
        parser = harmony.HarmonyStreamParser(self._tokenizer)
        matcher = StopMatcher(stops)
        started = time.monotonic()
        generated = 0
        async for chunk in _until_cancelled(chunks, is_cancelled, self._cancel_poll_seconds):
            if chunk.token_ids:
                if generated == 0:
                    self._metrics.time_to_first_token(time.monotonic() - started)
                generated += len(chunk.token_ids)
                self._metrics.generated_tokens(len(chunk.token_ids))
            deltas = list(parser.feed(chunk.token_ids))
            if chunk.finish_reason is not None:
                deltas.extend(parser.finish())
            for delta in deltas:
                text = matcher.feed(delta.text) if delta.channel == _ANSWER_CHANNEL else delta.text
                if text:
                    yield StepOutput(text, delta.channel, prompt_tokens, generated)
                if matcher.stopped:
                    yield StepOutput("", _ANSWER_CHANNEL, prompt_tokens, generated, schema.FINISH_STOP)
                    return
            if chunk.finish_reason is not None:
                held = matcher.flush()
                if held:
                    yield StepOutput(held, _ANSWER_CHANNEL, prompt_tokens, generated)
                yield StepOutput("", _ANSWER_CHANNEL, prompt_tokens, generated, chunk.finish_reason)
                return
        yield StepOutput("", _ANSWER_CHANNEL, prompt_tokens, generated, schema.FINISH_STOP)


async def gathered(steps: AsyncIterator[StepOutput]) -> AsyncIterator[StepOutput]:
    """The steps joined into one per run of the same channel, released when the last step arrives."""
    runs: list[StepOutput] = []
    async for step in steps:
        if runs and runs[-1].channel == step.channel and not runs[-1].finish_reason:
            previous = runs[-1]
            runs[-1] = StepOutput(
                previous.text + step.text, step.channel, step.prompt_tokens, step.completion_tokens, step.finish_reason
            )
        elif step.text or step.finish_reason:
            runs.append(step)
    for run in runs:
        yield run


async def _until_cancelled(
    chunks: AsyncIterator[TokenChunk], is_cancelled: Callable[[], bool], poll_seconds: float
) -> AsyncIterator[TokenChunk]:
    """The engine's chunks, checking `is_cancelled` at most every `poll_seconds` (each check is a
    round trip to the server) and whenever the engine is slower than that."""
    last_check = time.monotonic()
    while True:
        next_chunk = asyncio.ensure_future(anext(chunks))
        while not next_chunk.done():
            await asyncio.wait((next_chunk,), timeout=poll_seconds)
            if not next_chunk.done() or time.monotonic() - last_check >= poll_seconds:
                last_check = time.monotonic()
                if is_cancelled():
                    next_chunk.cancel()
                    await asyncio.gather(next_chunk, return_exceptions=True)
                    raise ClientCancelledError
        try:
            chunk = next_chunk.result()
        except StopAsyncIteration:
            return
        yield chunk


async def _aclose(chunks: AsyncIterator[TokenChunk]) -> None:
    """Closing the engine's iterator cancels its request (a no-op once it has finished)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
