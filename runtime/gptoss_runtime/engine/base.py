"""The engine interface: token ids in, a cancellable async stream of token ids out, live stats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    # Structured output (`gptoss_runtime.engine.guided.GuidedDecoding`): the engine may only emit tokens
    # that keep the completion valid. None: free generation.
    guided: Any = None
    # None: no log probabilities; k (0..MAX_TOP_LOGPROBS): each token's logprob and the k most likely.
    logprobs: int | None = None


MAX_TOP_LOGPROBS = 20  # OpenAI's bound for top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log probability under the model, and the `top` most likely tokens at its
    position as (token id, logprob), most likely first."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class TokenChunk:
    """New tokens since the previous chunk; the last chunk has `finish_reason` set."""

    token_ids: list[int]
    finish_reason: str | None = None  # "stop" (a stop token), "length" (max_tokens/max_seq_len), "cancelled"
    # One per token id when the request asked for logprobs; None otherwise.
    logprobs: tuple[TokenLogprob, ...] | None = None


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class EngineRequestError(ValueError):
    """The engine refused one request for what it asked (a client error, not an engine failure).
    `code` is OpenAI's error code where one applies (`context_length_exceeded`)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EngineStats:
    requests_running: int
    requests_waiting: int
    kv_cache_utilization: float  # 0..1
    generated_tokens_total: int
    prompt_tokens_total: int


@runtime_checkable
class Engine(Protocol):
    """Closing the iterator returned by `generate` (aclose / task cancellation) cancels the request."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]: ...

    def stats(self) -> EngineStats: ...

    async def close(self) -> None: ...
