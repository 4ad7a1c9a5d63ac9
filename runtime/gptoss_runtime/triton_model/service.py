"""What the `gpt_oss` model does with one request, free of Triton: validate, render harmony, stream.

`GenerationService.stream` renders the chat as a harmony prompt, runs it through the engine, parses the
generated tokens back into channel deltas (analysis = reasoning, final = the answer), applies stop
strings to the answer, and reports metrics. It never asks whether the client is still there (each such
question is a round trip to the server): whoever runs it cancels its task when the client has gone
(the Triton model does so from one cancellation sweep over all requests), which closes the engine
request and counts the request as cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from gptoss_runtime import harmony
from gptoss_runtime.engine.base import (
    CONTEXT_LENGTH_EXCEEDED,
    MAX_TOP_LOGPROBS,
    Engine,
    EngineRequestError,
    GenerationRequest,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)
from gptoss_runtime.metrics import OUTCOME_CANCELLED, OUTCOME_ERROR, OUTCOME_SUCCESS, MetricsSink
from gptoss_runtime.tokenizer import Tokenizer, TokenizerError
from gptoss_runtime.triton_model import schema
from gptoss_runtime.triton_model.schema import TokenLogprobOut

ROLES: Final = ("system", "developer", "user", "assistant", "tool")
REASONING_EFFORTS: Final = ("low", "medium", "high")
_ANSWER_CHANNEL: Final = "final"
_Number = TypeVar("_Number", int, float)


class InputError(ValueError):
    """A request the model cannot serve; the message names the input and the fix."""

    def __init__(self, field: str, problem: str, code: str | None = None) -> None:
        super().__init__(schema.with_error_code(f"{field}: {problem}", code))
        self.field = field
        self.code = code


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
    tools: tuple[harmony.ToolDefinition, ...] = ()
    current_date: str | None = None  # None: today (UTC)
    guided: Any = None  # a `gptoss_runtime.engine.guided.GuidedDecoding` (structured output), or None
    raw_prompt: str | None = None  # a raw completion: this text tokenized as is, no harmony either way
    logprobs: int | None = None  # None: none; k: each text token's logprob and the k most likely


@dataclass(frozen=True)
class StepOutput:
    text: str
    channel: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = ""  # set on the last step only
    # When asked for: the tokens whose text this step carries (or, for text held back by a stop
    # string, carried earlier), with their logprobs.
    logprobs: tuple[TokenLogprobOut, ...] = ()


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
        tools=parse_tools(_scalar_text(get, schema.TOOLS)),
        current_date=_scalar_text(get, schema.CURRENT_DATE),
        guided=parse_guided(_scalar_text(get, schema.GUIDED)),
        raw_prompt=text if _flag(get, schema.RAW, default=False) else None,
        logprobs=_logprobs(get),
    )


def _logprobs(get: InputGetter) -> int | None:
    if get(schema.LOGPROBS) is None:
        return None
    top = _scalar_number(get, schema.LOGPROBS, int, 0)
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InputError(schema.LOGPROBS, f"must be between 0 and {MAX_TOP_LOGPROBS}, got {top}")
    return top


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
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise InputError(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise InputError(f"{where}.content", "must be a string")
        messages.append(
            harmony.ChatMessage(
                role=role,
                content=content,
                name=_optional_text(item, "name", where),
                channel=_optional_text(item, "channel", where),
                reasoning=_optional_text(item, "reasoning", where),
                tool_calls=_tool_calls(item.get("tool_calls"), f"{where}.tool_calls"),
            )
        )
    return tuple(messages)


def _optional_text(item: dict[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}.{key}", "must be a string")
    return value


def _tool_calls(raw: Any, where: str) -> tuple[harmony.ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(where, 'must be a list of {"name", "arguments"} objects')
    calls = []
    for index, call in enumerate(raw):
        name = call.get("name") if isinstance(call, dict) else None
        arguments = call.get("arguments") if isinstance(call, dict) else None
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise InputError(f"{where}[{index}]", 'must be {"name": string, "arguments": JSON text}')
        calls.append(harmony.ToolCall(name, arguments))
    return tuple(calls)


def parse_tools(text: str | None) -> tuple[harmony.ToolDefinition, ...]:
    if not text:
        return ()
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise InputError(schema.TOOLS, f"is not valid JSON ({error})") from error
    if not isinstance(raw, list):
        raise InputError(schema.TOOLS, 'must be a JSON list of {"name", "description", "parameters"} objects')
    tools = []
    for index, tool in enumerate(raw):
        where = f"{schema.TOOLS}[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InputError(f"{where}.name", "a tool needs a name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InputError(f"{where}.parameters", "must be a JSON schema object")
        tools.append(harmony.ToolDefinition(tool["name"], str(tool.get("description") or ""), parameters))
    return tuple(tools)


def parse_guided(text: str | None) -> Any:
    """The structured-output constraint (see `gptoss_runtime.engine.guided`), or None."""
    if not text:
        return None
    from gptoss_runtime.engine.guided import GuidedDecodingError, parse_guided_json

    try:
        return parse_guided_json(text)
    except GuidedDecodingError as error:
        raise InputError(schema.GUIDED, str(error)) from error


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
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._metrics = metrics
        self._max_seq_len = max_seq_len
        self._stop_token_ids = tuple(harmony.stop_token_ids(tokenizer))

    @property
    def engine(self) -> Engine:
        return self._engine

    def render(self, request: ModelRequest) -> list[int]:
        try:
            prompt = (
                self._tokenizer.encode(request.raw_prompt)
                if request.raw_prompt is not None
                else harmony.render_prompt(
                    list(request.messages),
                    request.reasoning_effort,
                    self._tokenizer,
                    tools=request.tools,
                    current_date=request.current_date or datetime.datetime.now(datetime.UTC).date().isoformat(),
                )
            )
        except harmony.HarmonyError as error:
            raise InputError(schema.MESSAGES, str(error)) from error
        if len(prompt) >= self._max_seq_len:
            raise InputError(
                schema.MESSAGES,
                f"the prompt has {len(prompt)} tokens; this deployment takes at most {self._max_seq_len - 1}",
                CONTEXT_LENGTH_EXCEEDED,
            )
        return prompt

    async def stream(self, request_id: str, request: ModelRequest) -> AsyncIterator[StepOutput]:
        """Steps of the completion; raises `InputError` if the prompt is too long or the engine refuses the
        request, and `asyncio.CancelledError` (counted as cancelled) when its task is cancelled."""
        prompt = self.render(request)
        sampling = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop_token_ids=self._stop_token_ids,
            guided=request.guided,
            logprobs=request.logprobs,
        )
        chunks = self._engine.generate(GenerationRequest(request_id, prompt, sampling))
        self._metrics.prompt_tokens(len(prompt))
        self._metrics.refresh(self._engine.stats())
        outcome = OUTCOME_ERROR
        try:
            async for step in self._steps(chunks, len(prompt), request.stop, raw=request.raw_prompt is not None):
                yield step
            outcome = OUTCOME_SUCCESS
        except EngineRequestError as error:
            raise InputError(schema.MESSAGES, str(error), error.code) from error
        except (ClientCancelledError, asyncio.CancelledError, GeneratorExit):
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
        *,
        raw: bool = False,
    ) -> AsyncIterator[StepOutput]:
        parser: harmony.HarmonyStreamParser | harmony.RawTextParser = (
            harmony.RawTextParser(self._tokenizer) if raw else harmony.HarmonyStreamParser(self._tokenizer)
        )
        matcher = StopMatcher(stops)
        answer_logprobs = _AnswerLogprobs()
        started = time.monotonic()
        generated = 0
        async for chunk in chunks:
            if chunk.token_ids:
                if generated == 0:
                    self._metrics.time_to_first_token(time.monotonic() - started)
                generated += len(chunk.token_ids)
                self._metrics.generated_tokens(len(chunk.token_ids))
            steps: list[StepOutput] = []
            finish_reason = chunk.finish_reason
            for piece in self._pieces(parser, chunk):
                logprobs = tuple(piece.logprobs)
                if piece.channel == _ANSWER_CHANNEL:
                    text = matcher.feed(piece.text)
                    logprobs = answer_logprobs.released(text, logprobs, stopped=matcher.stopped)
                else:
                    text = piece.text
                if text or logprobs:
                    steps.append(StepOutput(text, piece.channel, prompt_tokens, generated, logprobs=logprobs))
                if matcher.stopped:
                    finish_reason = schema.FINISH_STOP
                    break
            if finish_reason is not None:
                held = "" if matcher.stopped else matcher.flush()
                for step in _finished(steps, held, finish_reason, prompt_tokens, generated):
                    yield step
                return
            for step in steps:
                yield step
        yield StepOutput("", _ANSWER_CHANNEL, prompt_tokens, generated, schema.FINISH_STOP)

    def _pieces(self, parser: harmony.HarmonyStreamParser | harmony.RawTextParser, chunk: TokenChunk) -> list[_Piece]:
        """The chunk's text per message (and, when asked for, its text tokens' logprobs)."""
        pieces: list[_Piece] = []
        if chunk.logprobs is None:  # the common case: the whole chunk at once
            for delta in parser.feed(chunk.token_ids):
                pieces.append(_Piece(channel_label(delta), -1, delta.text))
        else:  # token by token, to know which tokens carry text and in which message
            for token, logprob in zip(chunk.token_ids, chunk.logprobs, strict=True):
                message = len(getattr(parser, "messages", ()))
                for delta in parser.feed([token]):
                    _piece_for(pieces, channel_label(delta), message).text += delta.text
                if parser.last_text_channel is not None:
                    channel, recipient = parser.last_text_channel
                    label = f"{channel} to={recipient}" if recipient else channel
                    _piece_for(pieces, label, message).logprobs.append(self._logprob_out(token, logprob))
        if chunk.finish_reason is not None:
            message = len(getattr(parser, "messages", ()))
            for delta in parser.finish():
                _piece_for(pieces, channel_label(delta), message).text += delta.text
        return pieces

    def _logprob_out(self, token: int, logprob: TokenLogprob) -> TokenLogprobOut:
        top = tuple((self._token_bytes(other), value) for other, value in logprob.top)
        return TokenLogprobOut(self._token_bytes(token), logprob.logprob, top)

    def _token_bytes(self, token: int) -> bytes:
        try:
            return self._tokenizer.token_bytes(token)
        except (TokenizerError, OverflowError, ValueError):  # an id past the tokenizer (padded vocab)
            return b""


@dataclass
class _Piece:
    channel: str  # the `channel` output: channel and recipient
    message: int  # which harmony message (-1: not tracked)
    text: str = ""
    logprobs: list[TokenLogprobOut] = field(default_factory=list)


def _piece_for(pieces: list[_Piece], channel: str, message: int) -> _Piece:
    if not pieces or pieces[-1].channel != channel or pieces[-1].message != message:
        pieces.append(_Piece(channel, message))
    return pieces[-1]


class _AnswerLogprobs:
    """Keeps the answer's logprobs in step with its text when a stop string cuts it: the tokens after
    the cut are dropped (text merely held back by the matcher keeps its logprobs, sent a step early)."""

    def __init__(self) -> None:
        self._released_chars = 0
        self._logprob_chars = 0

    def released(
        self, text: str, logprobs: tuple[TokenLogprobOut, ...], *, stopped: bool
    ) -> tuple[TokenLogprobOut, ...]:
        self._released_chars += len(text)
        kept = []
        for entry in logprobs:
            if stopped and self._logprob_chars >= self._released_chars:
                break
            kept.append(entry)
            self._logprob_chars += len(entry.token.decode("utf-8", errors="ignore"))
        return tuple(kept)


def _finished(
    steps: list[StepOutput], held: str, finish_reason: str, prompt_tokens: int, generated: int
) -> list[StepOutput]:
    """A finishing chunk's steps, the last one carrying the finish reason: the answer's last text goes
    out with it in one response (each response is a round trip to the server and a message to the
    gateway; an empty finishing response after every request's last text was a third of all responses
    when many streams ended together). After reasoning or a message to a tool, the finish reason
    comes in an answer step of its own, as before."""
    if steps and steps[-1].channel == _ANSWER_CHANNEL:
        last = steps[-1]
        return [*steps[:-1], dataclasses.replace(last, text=last.text + held, finish_reason=finish_reason)]
    return [*steps, StepOutput(held, _ANSWER_CHANNEL, prompt_tokens, generated, finish_reason)]


def channel_label(delta: harmony.ChannelDelta) -> str:
    """The `channel` output: the channel, and for a message to a tool ` to=<recipient>` (see schema)."""
    return f"{delta.channel} to={delta.recipient}" if delta.recipient else delta.channel


def joined(earlier: StepOutput, later: StepOutput) -> StepOutput | None:
    """Two consecutive steps as one (same channel, the earlier not the last), or None."""
    if earlier.channel != later.channel or earlier.finish_reason:
        return None
    return StepOutput(
        earlier.text + later.text,
        later.channel,
        later.prompt_tokens,
        later.completion_tokens,
        later.finish_reason,
        earlier.logprobs + later.logprobs,
    )


async def gathered(steps: AsyncIterator[StepOutput]) -> AsyncIterator[StepOutput]:
    """The steps joined into one per run of the same channel, released when the last step arrives."""
    runs: list[StepOutput] = []
    async for step in steps:
        run = joined(runs[-1], step) if runs else None
        if run is not None:
            runs[-1] = run
        elif step.text or step.finish_reason or step.logprobs:
            runs.append(step)
    for run in runs:
        yield run


async def _aclose(chunks: AsyncIterator[TokenChunk]) -> None:
    """Closing the engine's iterator cancels its request (a no-op once it has finished)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
