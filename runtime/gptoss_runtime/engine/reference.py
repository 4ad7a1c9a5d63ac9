"""The reference engine: gpt-oss in numpy on the CPU, with continuous batching and a KV cache per sequence.

Requests wait in a queue until one of `max_batch_size` slots is free. A scheduler task runs one step at a
time in a worker thread (`asyncio.to_thread`, so the event loop stays responsive): the step prefills the
newly admitted sequences and decodes one token for every other running one. Closing a request's
iterator (or cancelling the task reading it) frees its slot before the next step.

The last chunk of a request that ends with a stop token carries that token (so a harmony parser can tell
`<|return|>` from `<|call|>`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptoss_runtime.engine.base import EngineStats, GenerationRequest, TokenChunk, TokenLogprob
from gptoss_runtime.engine.guided import GuidedDecoding, GuidedState, guidance_tokenizer
from gptoss_runtime.engine.numpy_model import Array, GptOssNumpyModel, Segment, SequenceCache
from gptoss_runtime.tokenizer import TOKENIZER_FILE_NAME, Tokenizer

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"


class EngineClosedError(RuntimeError):
    """The engine was closed; it takes no more requests."""


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    cache: SequenceCache
    rng: np.random.Generator
    queue: asyncio.Queue[TokenChunk | BaseException] = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    prefilled: bool = False
    finished: bool = False
    cancelled: bool = False
    guided: GuidedState | None = None  # structured output: the llguidance matcher that masks its logits

    @property
    def length(self) -> int:
        return len(self.request.prompt_token_ids) + len(self.generated)


def sample_token(logits: Array, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when temperature is 0; otherwise softmax(logits / temperature) cut to the top_p nucleus."""
    if temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    if top_p < 1.0:
        order = np.argsort(-probabilities, kind="stable")
        sorted_probabilities = probabilities[order]
        # Keep the most likely tokens until their mass reaches top_p (always at least one).
        keep = np.cumsum(sorted_probabilities) - sorted_probabilities < top_p
        nucleus = np.zeros_like(probabilities)
        nucleus[order[keep]] = sorted_probabilities[keep]
        probabilities = nucleus / nucleus.sum()
    return int(rng.choice(probabilities.shape[0], p=probabilities))


def token_logprob(logits: Array, token: int, top: int) -> TokenLogprob:
    """`token`'s log probability under softmax(logits) (the model's own distribution: before
    temperature, top_p or a structured-output mask, as vLLM's default), with the `top` most likely."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    log_probabilities = shifted - np.log(np.sum(np.exp(shifted)))
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        count = min(top, log_probabilities.shape[0])
        candidates = np.argpartition(-log_probabilities, count - 1)[:count]
        ordered = candidates[np.argsort(-log_probabilities[candidates], kind="stable")]
        best = tuple((int(index), float(log_probabilities[index])) for index in ordered)
    return TokenLogprob(float(log_probabilities[token]), best)


class ReferenceEngine:
    """Implements `gptoss_runtime.engine.base.Engine` with `GptOssNumpyModel`."""

    def __init__(
        self,
        model: GptOssNumpyModel,
        *,
        max_batch_size: int = 8,
        max_seq_len: int = 4096,
        sampled_vocab_size: int | None = None,
        tokenizer_json: str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be at least 2, got {max_seq_len}")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        # The embedding table is padded past the tokenizer (201088 vs 200019 ids in the real model): never
        # sample an id the tokenizer cannot decode.
        self.sampled_vocab_size = min(sampled_vocab_size or model.config.vocab_size, model.config.vocab_size)
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._closed = False
        self._generated_total = 0
        self._prompt_total = 0
        self._tokenizer_json = tokenizer_json  # for structured output (llguidance)
        self._guidance_tokenizer: object | None = None

    @classmethod
    def from_checkpoint(cls, weights_dir: Path, *, max_batch_size: int = 8, max_seq_len: int = 4096) -> ReferenceEngine:
        weights_dir = Path(weights_dir)
        model = GptOssNumpyModel.from_checkpoint(weights_dir)
        sampled_vocab_size = None
        tokenizer_json = None
        if (weights_dir / TOKENIZER_FILE_NAME).is_file():
            sampled_vocab_size = Tokenizer.from_dir(weights_dir).vocab_size
            tokenizer_json = (weights_dir / TOKENIZER_FILE_NAME).read_text(encoding="utf-8")
        return cls(
            model,
            max_batch_size=max_batch_size,
            max_seq_len=max_seq_len,
            sampled_vocab_size=sampled_vocab_size,
            tokenizer_json=tokenizer_json,
        )

    # ---------------------------------------------------------------------------------------------
    # Engine interface
    # ---------------------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        """Stream the tokens of one request; raises ValueError (before any chunk) for a bad request."""
        self._validate(request)
        if self._closed:
            raise EngineClosedError("the reference engine is closed")
        sequence = _Sequence(
            request=request,
            cache=self.model.new_cache(self.max_seq_len),
            rng=np.random.default_rng(request.sampling.seed),
            guided=self._guided_state(request.sampling.guided, request.sampling.stop_token_ids),
        )
        self._ensure_scheduler()
        self._waiting.append(sequence)
        try:
            while True:
                item = await sequence.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not sequence.finished:
                sequence.cancelled = True
                with contextlib.suppress(ValueError):
                    self._waiting.remove(sequence)
                self._wake()

    def stats(self) -> EngineStats:
        held = sum(sequence.length for sequence in self._running if not sequence.finished)
        return EngineStats(
            requests_running=len(self._running),
            requests_waiting=len(self._waiting),
            kv_cache_utilization=min(1.0, held / (self.max_batch_size * self.max_seq_len)),
            generated_tokens_total=self._generated_total,
            prompt_tokens_total=self._prompt_total,
        )

    async def close(self) -> None:
        self._closed = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            if self._loop is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await self._scheduler
            self._scheduler = None
        for sequence in [*self._running, *self._waiting]:
            self._finish(sequence, TokenChunk([], FINISH_CANCELLED))
        self._running.clear()
        self._waiting.clear()

    # ---------------------------------------------------------------------------------------------
    # scheduling
    # ---------------------------------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> None:
        prompt = request.prompt_token_ids
        sampling = request.sampling
        if not prompt:
            raise ValueError("prompt_token_ids must not be empty")
        if len(prompt) >= self.max_seq_len:
            raise ValueError(
                f"prompt_token_ids has {len(prompt)} tokens; max_seq_len is {self.max_seq_len}, so a prompt may "
                f"have at most {self.max_seq_len - 1}"
            )
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt_token_ids must lie in [0, {vocab}); got ids from {min(prompt)} to {max(prompt)}")
        if sampling.max_tokens < 1:
            raise ValueError(f"sampling.max_tokens must be at least 1, got {sampling.max_tokens}")
        if sampling.temperature < 0:
            raise ValueError(f"sampling.temperature must be 0 (greedy) or more, got {sampling.temperature}")
        if not 0.0 < sampling.top_p <= 1.0:
            raise ValueError(f"sampling.top_p must lie in (0, 1], got {sampling.top_p}")

    def _guided_state(self, guided: GuidedDecoding | None, stop_token_ids: tuple[int, ...]) -> GuidedState | None:
        if guided is None:
            return None
        if self._tokenizer_json is None:
            raise ValueError("structured output needs the checkpoint's tokenizer.json next to the weights")
        if self._guidance_tokenizer is None:
            stop = stop_token_ids[0] if stop_token_ids else self.sampled_vocab_size - 1
            self._guidance_tokenizer = guidance_tokenizer(self._tokenizer_json, self.sampled_vocab_size, stop)
        return GuidedState(self._guidance_tokenizer, guided)

    def _ensure_scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # The scheduler task and its event belong to one loop; move to the new one when the old one
            # is gone or idle (tests and the Triton model may start a new loop after the last one closed).
            old_loop_busy = self._loop is not None and not self._loop.is_closed() and (self._running or self._waiting)
            if old_loop_busy:
                raise RuntimeError("the reference engine is serving requests on another event loop")
            self._loop, self._wakeup, self._scheduler = loop, asyncio.Event(), None
            self._running, self._waiting = [], deque()
        assert self._wakeup is not None
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = loop.create_task(self._schedule(), name="reference-engine")
        self._wakeup.set()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _schedule(self) -> None:
        assert self._wakeup is not None
        while not self._closed:
            self._running = [sequence for sequence in self._running if not sequence.cancelled]
            while self._waiting and len(self._running) < self.max_batch_size:
                sequence = self._waiting.popleft()
                if not sequence.cancelled:
                    self._running.append(sequence)
            if not self._running:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(self._running)
            try:
                tokens = await asyncio.to_thread(self._step, batch)
            except Exception as error:  # a failed step fails its requests, not the engine
                for sequence in batch:
                    self._fail(sequence, error)
                continue
            for sequence, (token, logprob) in zip(batch, tokens, strict=True):
                self._deliver(sequence, token, logprob)

    def _step(self, batch: list[_Sequence]) -> list[tuple[int, TokenLogprob | None]]:
        """One forward pass (worker thread): prefill new sequences, decode one token for the others."""
        segments = [
            Segment(
                sequence.generated[-1:] if sequence.prefilled else sequence.request.prompt_token_ids,
                sequence.cache,
            )
            for sequence in batch
        ]
        all_logits = self.model.forward(segments)
        tokens = []
        for sequence, logits in zip(batch, all_logits, strict=True):
            sampling = sequence.request.sampling
            candidates = logits[: self.sampled_vocab_size]
            raw = candidates
            if sequence.guided is not None:
                candidates = sequence.guided.mask(candidates)
            token = sample_token(candidates, sampling.temperature, sampling.top_p, sequence.rng)
            if sequence.guided is not None:
                sequence.guided.accept(token)
            logprob = None if sampling.logprobs is None else token_logprob(raw, token, sampling.logprobs)
            tokens.append((token, logprob))
        return tokens

    def _deliver(self, sequence: _Sequence, token: int, logprob: TokenLogprob | None = None) -> None:
        if not sequence.prefilled:
            sequence.prefilled = True
            self._prompt_total += len(sequence.request.prompt_token_ids)
        if sequence.cancelled:
            return
        sequence.generated.append(token)
        self._generated_total += 1
        sampling = sequence.request.sampling
        finish_reason = None
        if token in sampling.stop_token_ids:
            finish_reason = FINISH_STOP
        elif len(sequence.generated) >= sampling.max_tokens or sequence.length >= self.max_seq_len:
            finish_reason = FINISH_LENGTH
        chunk = TokenChunk([token], finish_reason, None if logprob is None else (logprob,))
        if finish_reason is None:
            sequence.queue.put_nowait(chunk)
        else:
            self._finish(sequence, chunk)

    def _finish(self, sequence: _Sequence, chunk: TokenChunk) -> None:
        if sequence.finished:
            return
        sequence.finished = True
        sequence.queue.put_nowait(chunk)
        with contextlib.suppress(ValueError):
            self._running.remove(sequence)

    def _fail(self, sequence: _Sequence, error: Exception) -> None:
        if sequence.finished:
            return
        sequence.finished = True
        sequence.queue.put_nowait(RuntimeError(f"the reference engine failed a step: {error}"))
        with contextlib.suppress(ValueError):
            self._running.remove(sequence)
