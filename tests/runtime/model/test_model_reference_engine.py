"""The reference engine's serving behaviour: greedy/seeded sampling, stop conditions, concurrency bound,
cancellation, stats, and a responsive event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from gptoss_runtime.engine.base import Engine, GenerationRequest, SamplingParams, TokenChunk
from gptoss_runtime.engine.numpy_model import GptOssNumpyModel, Segment
from gptoss_runtime.engine.reference import ReferenceEngine, sample_token

PROMPT = [5, 17, 42, 99, 3, 250, 7]


@pytest.fixture
async def engine(tiny_dir: Path) -> AsyncIterator[ReferenceEngine]:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=2, max_seq_len=256)
    yield engine
    await engine.close()


def _request(name: str, prompt: list[int] = PROMPT, **sampling: object) -> GenerationRequest:
    return GenerationRequest(name, list(prompt), SamplingParams(**sampling))  # type: ignore[arg-type]


async def _collect(engine: ReferenceEngine, request: GenerationRequest) -> tuple[list[int], list[TokenChunk]]:
    chunks = [chunk async for chunk in engine.generate(request)]
    return [token for chunk in chunks for token in chunk.token_ids], chunks


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until the engine reaches a state (it has no event to wait on), failing after `within` s."""

    async def wait() -> None:
        while True:
            if condition():
                return
            await asyncio.sleep(0.001)

    await asyncio.wait_for(wait(), within)


def test_implements_the_engine_protocol(tiny_dir: Path) -> None:
    assert isinstance(ReferenceEngine.from_checkpoint(tiny_dir), Engine)


async def test_greedy_output_equals_a_full_recompute_loop(
    engine: ReferenceEngine, tiny_model: GptOssNumpyModel
) -> None:
    tokens, chunks = await _collect(engine, _request("greedy", max_tokens=12, temperature=0.0))
    expected: list[int] = []
    for _ in range(12):
        logits = tiny_model.forward([Segment(PROMPT + expected, tiny_model.new_cache(64))])[0]
        expected.append(int(np.argmax(logits[: engine.sampled_vocab_size])))
    assert tokens == expected
    assert chunks[-1].finish_reason == "length"
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])


async def test_seeded_sampling_is_reproducible(engine: ReferenceEngine) -> None:
    first, _ = await _collect(engine, _request("a", max_tokens=20, temperature=1.0, seed=7))
    again, _ = await _collect(engine, _request("b", max_tokens=20, temperature=1.0, seed=7))
    other, _ = await _collect(engine, _request("c", max_tokens=20, temperature=1.0, seed=8))
    assert first == again
    assert first != other
    assert max(first + other) < engine.sampled_vocab_size  # never an id the tokenizer lacks


async def test_stop_token_ends_the_request_and_is_delivered(engine: ReferenceEngine) -> None:
    greedy, _ = await _collect(engine, _request("probe", max_tokens=3, temperature=0.0))
    stop = greedy[1]
    tokens, chunks = await _collect(
        engine, _request("stop", max_tokens=50, temperature=0.0, stop_token_ids=(stop, 99999))
    )
    assert tokens == greedy[: greedy.index(stop) + 1]
    assert chunks[-1] == TokenChunk([stop], "stop")


async def test_max_seq_len_bounds_the_output(tiny_dir: Path) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=len(PROMPT) + 4)
    try:
        tokens, chunks = await _collect(engine, _request("long", max_tokens=100, temperature=0.0))
    finally:
        await engine.close()
    assert len(tokens) == 4
    assert chunks[-1].finish_reason == "length"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request("empty", prompt=[]), "must not be empty"),
        (_request("long", prompt=[1] * 256), "max_seq_len is 256"),
        (_request("range", prompt=[1, 10**6]), r"must lie in \[0, 576\)"),
        (_request("tokens", max_tokens=0), "max_tokens must be at least 1"),
        (_request("top_p", top_p=0.0), r"top_p must lie in \(0, 1\]"),
        (_request("temp", temperature=-1.0), "temperature must be 0"),
    ],
)
async def test_bad_requests_are_refused_before_any_chunk(
    engine: ReferenceEngine, request_: GenerationRequest, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await anext(engine.generate(request_))
    assert engine.stats().requests_waiting == 0


async def test_concurrency_is_bounded_and_queued_requests_wait(engine: ReferenceEngine) -> None:
    streams = [engine.generate(_request(f"r{i}", max_tokens=200, temperature=0.0)) for i in range(4)]
    firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await _until(lambda: engine.stats().requests_running == 2)
    stats = engine.stats()
    assert stats.requests_waiting == 2
    assert 0 < stats.kv_cache_utilization <= 1
    await _until(lambda: sum(first.done() for first in firsts) == 2)
    assert engine.stats().requests_waiting == 2  # the other two still wait for a slot

    # Closing a running request frees its slot for a waiting one.
    running = next(i for i, first in enumerate(firsts) if first.done())
    await streams[running].aclose()
    await _until(lambda: engine.stats().requests_waiting == 1)
    assert engine.stats().requests_running == 2
    for first in firsts:
        first.cancel()  # a generator waiting in anext() is stopped by cancelling that task
    await asyncio.gather(*firsts, return_exceptions=True)
    for stream in streams:
        await stream.aclose()
    await _until(lambda: engine.stats().requests_running == 0)
    assert engine.stats().requests_waiting == 0


async def test_cancelling_the_reading_task_frees_the_slot(tiny_dir: Path) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=4096)
    seen: list[int] = []

    async def read_forever() -> None:
        async for chunk in engine.generate(_request("endless", max_tokens=4000, temperature=1.0, seed=1)):
            seen.extend(chunk.token_ids)

    try:
        reader = asyncio.ensure_future(read_forever())
        await _until(lambda: len(seen) >= 3)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        # The only slot is free again: a new request completes.
        tokens, _ = await asyncio.wait_for(_collect(engine, _request("next", max_tokens=3)), 10)
        assert len(tokens) == 3
        await _until(lambda: engine.stats().requests_running == 0)
    finally:
        await engine.close()


async def test_event_loop_stays_responsive_during_a_long_prefill(tiny_dir: Path) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=4096)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    try:
        prompt = [int(i) for i in np.random.default_rng(0).integers(0, 500, 600)]
        await _collect(engine, _request("prefill", prompt=prompt, max_tokens=1))
    finally:
        stop.set()
        await ticking
        await engine.close()
    assert ticks >= 5  # the loop kept running while the step computed in a worker thread


async def test_counters_and_close(tiny_dir: Path) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=256)
    await _collect(engine, _request("one", max_tokens=5))
    stats = engine.stats()
    assert (stats.prompt_tokens_total, stats.generated_tokens_total) == (len(PROMPT), 5)
    assert stats.kv_cache_utilization == 0.0

    running = engine.generate(_request("running", max_tokens=10_000 // 100))
    waiting = engine.generate(_request("waiting", max_tokens=5))
    first = await anext(running)
    pending = asyncio.ensure_future(anext(waiting))
    await _until(lambda: engine.stats().requests_waiting == 1)
    await engine.close()
    assert (await pending) == TokenChunk([], "cancelled")
    rest = [chunk async for chunk in running]
    assert first.finish_reason is None
    assert rest[-1].finish_reason == "cancelled"
    with pytest.raises(RuntimeError, match="closed"):
        await anext(engine.generate(_request("late")))


def test_sampling_respects_top_p_and_temperature() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    rng = np.random.default_rng(0)
    picks = {sample_token(logits, 1.0, 0.7, rng) for _ in range(300)}
    assert picks == {0, 1}  # the nucleus of 0.7 holds the two most likely tokens
    assert sample_token(logits, 0.0, 1.0, rng) == 0
    assert {sample_token(logits, 1.0, 1.0, rng) for _ in range(500)} == {0, 1, 2, 3}


def test_the_engine_moves_to_a_new_event_loop(tiny_dir: Path) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=64)

    async def once() -> list[int]:
        tokens, _ = await _collect(engine, _request("again", max_tokens=3, temperature=0.0))
        return tokens

    first = asyncio.run(once())
    assert asyncio.run(once()) == first  # a second loop (the first one is closed) is served too
