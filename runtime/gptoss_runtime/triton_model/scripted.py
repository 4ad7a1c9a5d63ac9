"""A scripted engine for tests: it answers every prompt with the same harmony completion.

Selected with `gptoss-runtime serve --engine scripted` (a test-only choice, hidden from `--help`). It
emits `<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant<|channel|>final<|message|>
{final}<|return|>` one token at a time (optionally paced), so tests see deterministic reasoning and
answer channels, token counts and stop/length/cancel behaviour without depending on model weights.
A prompt containing `ENDLESS_TRIGGER` gets an answer that never ends by itself: its final text repeats
until `max_tokens` (for cancellation tests).

Pacing: `scripted_token_delay_s` sleeps that long per token; `scripted_tokens_per_s` instead produces each
stream's tokens on a fixed schedule from its start (k tokens at start + k / rate, so a late wake-up does
not slow the stream down), which is how `bench/serving_load.py` sets an engine rate. Tokens come out in
chunks of `stream_interval` (as TensorRT-LLM's `stream_interval` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

from gptoss_runtime.engine.base import EngineStats, GenerationRequest, TokenChunk, TokenLogprob

DEFAULT_ANALYSIS: Final = "The user greets me. I will greet back."
DEFAULT_FINAL: Final = "Hello! How can I help you today?"
ENDLESS_TRIGGER: Final = "scripted:endless"
# A prompt containing TOOL_TRIGGER gets a real harmony tool-calling turn (analysis, a commentary preamble,
# then a call to `functions.get_weather` ending in <|call|>) until the history holds the tool's result;
# then the usual analysis and final answer.
TOOL_TRIGGER: Final = "scripted:tool"
TOOL_NAME: Final = "get_weather"
TOOL_ARGUMENTS: Final = '{"city":"Paris"}'
TOOL_ANALYSIS: Final = "The user wants the weather. I will call get_weather."
TOOL_PREAMBLE: Final = "Let me check the weather."
TOOL_CALL_TEXT: Final = (
    f"<|channel|>analysis<|message|>{TOOL_ANALYSIS}<|end|>"
    f"<|start|>assistant<|channel|>commentary<|message|>{TOOL_PREAMBLE}<|end|>"
    f"<|start|>assistant<|channel|>commentary to=functions.{TOOL_NAME} <|constrain|>json<|message|>"
    f"{TOOL_ARGUMENTS}<|call|>"
)
_TOOL_RESULT_MARK: Final = f"functions.{TOOL_NAME} to=assistant"
_SPECIAL = re.compile(r"(<\|[a-z_]+\|>)")
# With logprobs asked for, every scripted token has this logprob; the runners-up are ids 0, 1, ...
SCRIPTED_LOGPROB: Final = -0.5


def scripted_logprob(token: int, top: int) -> TokenLogprob:
    """The scripted token first, then ids 0, 1, ... (never the token itself) at -1, -2, ..."""
    others = [other for other in range(top + 1) if other != token][: max(0, top - 1)]
    best = ((token, SCRIPTED_LOGPROB), *((other, -1.0 - rank) for rank, other in enumerate(others)))
    return TokenLogprob(SCRIPTED_LOGPROB, best[:top])


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_id(self, special: str) -> int: ...


def script_token_ids(tokenizer: _Tokenizer, analysis: str, final: str) -> list[int]:
    """The completion's token ids: special tokens by id, text pieces through the tokenizer."""
    return harmony_token_ids(
        tokenizer,
        f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant<|channel|>final<|message|>{final}<|return|>",
    )


def harmony_token_ids(tokenizer: _Tokenizer, text: str) -> list[int]:
    """Token ids of harmony written as text: `<|...|>` pieces by id, the rest through the tokenizer."""
    ids: list[int] = []
    for piece in _SPECIAL.split(text):
        if not piece:
            continue
        ids.extend([tokenizer.token_id(piece)] if _SPECIAL.fullmatch(piece) else tokenizer.encode(piece))
    return ids


class ScriptedEngine:
    """Implements `gptoss_runtime.engine.base.Engine`."""

    def __init__(
        self,
        script: Sequence[int],
        *,
        token_delay_s: float = 0.0,
        tokens_per_s: float = 0.0,
        stream_interval: int = 1,
        max_batch_size: int = 8,
        endless: tuple[_Tokenizer, Sequence[int], Sequence[int]] | None = None,
    ) -> None:
        self._script = list(script)
        # (tokenizer, the completion's opening up to the answer text, the answer text repeated forever)
        self._endless = endless
        self._token_delay_s = token_delay_s
        self._tokens_per_s = tokens_per_s
        self._stream_interval = max(1, stream_interval)
        self._slots = asyncio.Semaphore(max_batch_size)
        self._max_batch_size = max_batch_size
        self._running = 0
        self._waiting = 0
        self._generated = 0
        self._prompt = 0
        self.cancelled_request_ids: list[str] = []

    @classmethod
    def from_options(cls, tokenizer: _Tokenizer, options: Mapping[str, Any]) -> ScriptedEngine:
        analysis = str(options.get("scripted_analysis", DEFAULT_ANALYSIS))
        final = str(options.get("scripted_final", DEFAULT_FINAL))
        opening = script_token_ids(tokenizer, analysis, "")[:-1]  # up to the answer text
        return cls(
            script_token_ids(tokenizer, analysis, final),
            token_delay_s=float(options.get("scripted_token_delay_s", 0.0)),
            tokens_per_s=float(options.get("scripted_tokens_per_s", 0.0)),
            stream_interval=int(options.get("stream_interval", 1)),
            max_batch_size=int(options.get("max_batch_size", 8)),
            endless=(tokenizer, opening, tokenizer.encode(f" {final}")),
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        self._waiting += 1
        admitted = False
        try:
            await self._slots.acquire()
            admitted = True
            self._waiting -= 1
            self._running += 1
            self._prompt += len(request.prompt_token_ids)
            # Closed here, not left to the loop's async-generator finalizer (a cross-thread wake-up).
            async with contextlib.aclosing(self._emit(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled_request_ids.append(request.request_id)
            raise
        finally:
            if admitted:
                self._running -= 1
                self._slots.release()
            else:
                self._waiting -= 1

    def _completion(self, request: GenerationRequest) -> Iterator[int]:
        if self._endless is not None:
            tokenizer, opening, repeated = self._endless
            prompt = tokenizer.decode(list(request.prompt_token_ids))
            if ENDLESS_TRIGGER in prompt:
                yield from opening
                while True:
                    yield from repeated
            if TOOL_TRIGGER in prompt and _TOOL_RESULT_MARK not in prompt:
                yield from harmony_token_ids(tokenizer, TOOL_CALL_TEXT)
                return
        yield from self._script

    async def _emit(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        stop_ids = set(request.sampling.stop_token_ids)
        started = asyncio.get_running_loop().time()
        produced = 0
        pending: list[int] = []
        for token in self._completion(request):
            pending.append(token)
            produced += 1
            # As TensorRT-LLM does, the output that reaches a stop token or `max_tokens` carries the
            # finish reason with its tokens (not an empty output after them: one response fewer).
            finish = "stop" if token in stop_ids else "length" if produced >= request.sampling.max_tokens else None
            if finish is not None or len(pending) >= self._stream_interval:
                await self._pace(started, produced, len(pending))
                self._generated += len(pending)
                chunk, pending = pending, []
                yield self._chunk(request, chunk, finish)
                if finish is not None:
                    return
        await self._pace(started, produced, len(pending))
        self._generated += len(pending)
        yield self._chunk(request, pending, "stop")

    @staticmethod
    def _chunk(request: GenerationRequest, tokens: list[int], finish_reason: str | None) -> TokenChunk:
        top = request.sampling.logprobs
        logprobs = None if top is None else tuple(scripted_logprob(token, top) for token in tokens)
        return TokenChunk(tokens, finish_reason, logprobs)

    async def _pace(self, started: float, produced: int, new_tokens: int) -> None:
        """Wait until the `produced`-th token is due (always yielding to the loop once)."""
        if self._tokens_per_s > 0:
            due = started + produced / self._tokens_per_s
            await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        else:
            await asyncio.sleep(self._token_delay_s * new_tokens)

    def stats(self) -> EngineStats:
        return EngineStats(
            requests_running=self._running,
            requests_waiting=self._waiting,
            kv_cache_utilization=self._running / self._max_batch_size,
            generated_tokens_total=self._generated,
            prompt_tokens_total=self._prompt,
        )

    async def close(self) -> None:
        return
