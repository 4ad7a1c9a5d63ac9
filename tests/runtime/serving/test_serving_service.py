"""The `gpt_oss` model's request handling without Triton: validation, stop strings, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gptoss_runtime.engine.base import EngineRequestError, GenerationRequest, SamplingParams, TokenChunk
from gptoss_runtime.harmony import ChatMessage
from gptoss_runtime.metrics import RecordingMetrics
from gptoss_runtime.tokenizer import Tokenizer
from gptoss_runtime.triton_model.scripted import DEFAULT_ANALYSIS, DEFAULT_FINAL, ENDLESS_TRIGGER, ScriptedEngine
from gptoss_runtime.triton_model.service import (
    GenerationService,
    InputError,
    ModelRequest,
    StopMatcher,
    parse_request,
)


def getter(**inputs: Any) -> Any:
    arrays = {}
    for name, value in inputs.items():
        if isinstance(value, str):
            arrays[name] = np.array([value.encode()], dtype=np.object_)
        elif isinstance(value, list):
            arrays[name] = np.array([item.encode() for item in value], dtype=np.object_)
        else:
            arrays[name] = np.array([value])
    return arrays.get


def parse(**inputs: Any) -> ModelRequest:
    return parse_request(getter(**inputs), max_tokens_limit=1000, default_reasoning_effort="medium")


def test_parse_request_reads_every_input() -> None:
    request = parse(
        messages=json.dumps([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
        max_tokens=20,
        temperature=0.5,
        top_p=0.9,
        seed=11,
        reasoning_effort="high",
        stop=["\n\n", "END"],
    )

    assert request.messages == (ChatMessage("developer", "Be brief."), ChatMessage("user", "Hi"))
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (20, 0.5, pytest.approx(0.9), 11)
    assert request.reasoning_effort == "high" and request.stop == ("\n\n", "END")


def test_defaults_fill_what_is_absent() -> None:
    request = parse(text_input="Hi")

    assert request.messages == (ChatMessage("user", "Hi"),)
    assert request.max_tokens == 1000 and request.reasoning_effort == "medium" and request.seed is None


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"text_input": "a", "max_tokens": 1001}, "max_tokens"),
        ({"messages": "{}"}, "messages"),
        ({"messages": json.dumps([{"role": "user"}])}, "messages[0].content"),
        ({"messages": json.dumps([{"role": "user", "content": "x", "name": 5}])}, "messages[0].name"),
        ({"text_input": "a", "stop": ["", "x"]}, "stop"),
    ],
)
def test_bad_inputs_name_the_field(inputs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as refused:
        parse(**inputs)
    assert refused.value.field == field


def test_stop_matcher_holds_back_a_possible_start_and_cuts_at_the_match() -> None:
    matcher = StopMatcher(["END"])

    assert matcher.feed("Hello E") == "Hello "
    assert matcher.feed("N") == ""
    assert matcher.feed("D and more") == ""
    assert matcher.stopped


def test_stop_matcher_releases_text_that_did_not_become_a_stop() -> None:
    matcher = StopMatcher(["END"])

    assert matcher.feed("The E") == "The "
    assert matcher.feed("ND? no: ENx") == ""  # "END" matched across the chunks
    assert matcher.stopped
    other = StopMatcher(["END"])
    assert other.feed("ab E") == "ab "
    assert other.feed("x") == "Ex"
    assert other.flush() == ""


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    from gptoss_runtime.checkpoint import make_tiny_checkpoint

    return Tokenizer.from_dir(make_tiny_checkpoint(Path(tmp_path_factory.mktemp("tiny")) / "w"))


async def test_service_separates_channels_and_counts(tokenizer: Tokenizer) -> None:
    metrics = RecordingMetrics()
    service = GenerationService(ScriptedEngine.from_options(tokenizer, {}), tokenizer, metrics, max_seq_len=1024)

    steps = [step async for step in service.stream("r1", parse(text_input="Hi"))]

    assert "".join(s.text for s in steps if s.channel == "analysis") == DEFAULT_ANALYSIS
    assert "".join(s.text for s in steps if s.channel == "final") == DEFAULT_FINAL
    assert steps[-1].finish_reason == "stop"
    assert metrics.outcomes == {"success": 1, "error": 0, "cancelled": 0}
    assert metrics.generated_tokens_total == steps[-1].completion_tokens
    assert len(metrics.first_token_seconds) == 1


async def test_the_last_answer_text_carries_the_finish_reason(tokenizer: Tokenizer) -> None:
    """The answer's last text and the finish reason go out in one response (not an empty one after it):
    a round trip to the server fewer per request."""
    engine = ScriptedEngine.from_options(tokenizer, {"stream_interval": 1000})
    service = GenerationService(engine, tokenizer, RecordingMetrics(), max_seq_len=1024)

    steps = [step async for step in service.stream("r1", parse(text_input="Hi"))]

    assert [(step.channel, step.text, step.finish_reason) for step in steps] == [
        ("analysis", DEFAULT_ANALYSIS, ""),
        ("final", DEFAULT_FINAL, "stop"),
    ]


async def test_a_request_cut_at_max_tokens_ends_with_its_text(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine.from_options(tokenizer, {"stream_interval": 4})
    service = GenerationService(engine, tokenizer, RecordingMetrics(), max_seq_len=4096)

    steps = [step async for step in service.stream("r1", parse(text_input=ENDLESS_TRIGGER, max_tokens=40))]

    assert steps[-1].finish_reason == "length" and steps[-1].text and steps[-1].completion_tokens == 40


async def test_service_cancels_the_engine_request_when_its_task_is_cancelled(tokenizer: Tokenizer) -> None:
    metrics = RecordingMetrics()
    engine = ScriptedEngine.from_options(tokenizer, {"scripted_token_delay_s": 0.01})
    service = GenerationService(engine, tokenizer, metrics, max_seq_len=4096)
    three_steps = asyncio.Event()

    async def consume() -> None:
        received = 0
        async for _ in service.stream("r2", parse(text_input=ENDLESS_TRIGGER, max_tokens=900)):
            received += 1
            if received == 3:
                three_steps.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_steps.wait(), 30)
    task.cancel()  # what the model's cancellation sweep does when the client has gone
    with pytest.raises(asyncio.CancelledError):
        await task

    assert engine.cancelled_request_ids == ["r2"]
    assert engine.stats().requests_running == 0
    assert metrics.outcomes["cancelled"] == 1


async def test_a_prompt_longer_than_the_model_takes_is_refused(tokenizer: Tokenizer) -> None:
    service = GenerationService(
        ScriptedEngine.from_options(tokenizer, {}), tokenizer, RecordingMetrics(), max_seq_len=16
    )

    with pytest.raises(InputError, match="prompt has") as refused:
        async for _ in service.stream("r3", parse(text_input="Hi")):
            pass
    assert refused.value.code == "context_length_exceeded"
    assert str(refused.value).endswith("[code: context_length_exceeded]")


class RefusingEngine(ScriptedEngine):
    """Refuses every request the way TrtllmEngine maps a TensorRT-LLM request error."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        raise EngineRequestError("prompt length exceeds max_num_tokens", "context_length_exceeded")
        yield TokenChunk([])  # pragma: no cover (makes this an async generator)


async def test_an_engine_refusal_is_an_input_error_with_its_code(tokenizer: Tokenizer) -> None:
    metrics = RecordingMetrics()
    service = GenerationService(RefusingEngine([1]), tokenizer, metrics, max_seq_len=4096)

    with pytest.raises(InputError, match="max_num_tokens") as refused:
        async for _ in service.stream("r4", parse(text_input="Hi")):
            pass
    assert (refused.value.field, refused.value.code) == ("messages", "context_length_exceeded")
    assert metrics.outcomes["error"] == 1


async def test_scripted_engine_streams_in_chunks_of_stream_interval(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine.from_options(tokenizer, {"stream_interval": 4, "scripted_tokens_per_s": 10_000})
    request = GenerationRequest("r5", [1, 2], SamplingParams(max_tokens=10))
    chunks = [chunk async for chunk in engine.generate(request)]

    assert [len(chunk.token_ids) for chunk in chunks] == [4, 4, 2]
    assert chunks[-1].finish_reason == "length"
    assert engine.stats().generated_tokens_total == 10


async def test_the_chunk_that_reaches_max_tokens_carries_the_finish_reason(tokenizer: Tokenizer) -> None:
    """As TensorRT-LLM's last output: no empty chunk after the tokens (one response fewer)."""
    engine = ScriptedEngine.from_options(tokenizer, {"stream_interval": 4})
    request = GenerationRequest("r6", tokenizer.encode(ENDLESS_TRIGGER), SamplingParams(max_tokens=8))
    chunks = [chunk async for chunk in engine.generate(request)]

    assert [(len(chunk.token_ids), chunk.finish_reason) for chunk in chunks] == [(4, None), (4, "length")]
