"""The TensorRT-LLM mapping faults of issue 11, each against a stand-in LLM that checks a request the way
TensorRT-LLM's LLM API does (`LLM._check_arguments` on the PyTorch backend, `RequestError` from the
executor, the unsigned 64-bit seed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_model_trtllm_stand_in import (
    RETURN,
    StandInCompletion,
    StandInOutput,
    make_plan,
    stand_in_sampling,
)

from gptoss_runtime.engine.base import EngineRequestError, GenerationRequest, SamplingParams, TokenChunk
from gptoss_runtime.engine.trtllm import TrtllmEngine, llm_kwargs, trtllm_sampling_kwargs


class RequestError(RuntimeError):
    """Named like `tensorrt_llm.executor.utils.RequestError`."""


class CheckingLLM:
    """Accepts or refuses a prompt as TensorRT-LLM 1.x's PyTorch backend does, for the LLM() arguments."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sampling: list[Any] = []

    def generate_async(self, prompt_token_ids: list[int], sampling_params: Any, streaming: bool) -> Any:
        prompt = len(prompt_token_ids)
        if not self.kwargs.get("enable_chunked_prefill", False) and prompt > self.kwargs["max_num_tokens"]:
            raise ValueError(
                f"The sum of prompt length ({prompt}), query length (0) should not exceed max_num_tokens "
                f"({self.kwargs['max_num_tokens']})"
            )
        seed = sampling_params.kwargs.get("seed")
        if seed is not None and not 0 <= seed < 2**64:
            raise OverflowError("seed must be an unsigned 64-bit integer")
        self.sampling.append(sampling_params)
        return self._stream()

    async def _stream(self) -> AsyncIterator[StandInOutput]:
        yield StandInOutput([StandInCompletion([5, RETURN], "stop", RETURN)], finished=True)


class FailingLLM(CheckingLLM):
    def _stream(self) -> AsyncIterator[StandInOutput]:
        return self._fail()

    async def _fail(self) -> AsyncIterator[StandInOutput]:
        raise RequestError("Prompt length 9000 exceeds max_seq_len 8192")
        yield StandInOutput([])  # pragma: no cover


def plan_20b_32k() -> Any:
    return make_plan(
        tensor_parallel_size=1,
        moe_expert_parallel_size=1,
        max_seq_len=32768,
        max_num_tokens=16384,
        enable_chunked_prefill=True,
        stream_interval=20,
    )


def engine_for(llm: CheckingLLM, max_seq_len: int = 32768) -> TrtllmEngine:
    return TrtllmEngine(llm, stand_in_sampling, max_batch_size=64, max_seq_len=max_seq_len)


def prompt_of(tokens: int, seed: int | None = None, max_tokens: int = 100) -> GenerationRequest:
    return GenerationRequest(
        "r", [7] * tokens, SamplingParams(max_tokens=max_tokens, seed=seed, stop_token_ids=(RETURN,))
    )


async def chunks(engine: TrtllmEngine, request: GenerationRequest) -> list[TokenChunk]:
    return [chunk async for chunk in engine.generate(request)]


async def test_a_20k_prompt_on_a_32k_20b_plan_is_accepted_with_chunked_prefill() -> None:
    kwargs = llm_kwargs(plan_20b_32k(), Path("/m"))
    assert (kwargs["enable_chunked_prefill"], kwargs["stream_interval"]) == (True, 20)

    received = await chunks(engine_for(CheckingLLM(**kwargs)), prompt_of(20_000))

    assert received == [TokenChunk([5, RETURN], "stop")]


async def test_an_llm_argument_refusal_becomes_context_length_exceeded() -> None:
    kwargs = llm_kwargs(plan_20b_32k(), Path("/m")) | {"enable_chunked_prefill": False}

    with pytest.raises(EngineRequestError, match="max_num_tokens") as refused:
        await chunks(engine_for(CheckingLLM(**kwargs)), prompt_of(20_000))
    assert refused.value.code == "context_length_exceeded"


async def test_a_prompt_longer_than_max_seq_len_is_refused_before_the_engine() -> None:
    llm = CheckingLLM(**llm_kwargs(plan_20b_32k(), Path("/m")))

    with pytest.raises(EngineRequestError, match="at most 32767") as refused:
        await chunks(engine_for(llm), prompt_of(32_768))
    assert refused.value.code == "context_length_exceeded"
    assert llm.sampling == []


async def test_a_request_error_from_the_executor_is_a_client_error() -> None:
    engine = engine_for(FailingLLM(**llm_kwargs(plan_20b_32k(), Path("/m"))))

    with pytest.raises(EngineRequestError, match="exceeds max_seq_len") as refused:
        await chunks(engine, prompt_of(100))
    assert refused.value.code == "context_length_exceeded"
    assert engine.stats().requests_running == 0


async def test_max_tokens_is_cut_to_what_fits_in_max_seq_len() -> None:
    llm = CheckingLLM(**llm_kwargs(plan_20b_32k(), Path("/m")))

    await chunks(engine_for(llm, max_seq_len=1000), prompt_of(990, max_tokens=500))

    assert llm.sampling[0].kwargs["max_tokens"] == 10


async def test_a_negative_seed_is_mapped_to_an_unsigned_64_bit_seed() -> None:
    llm = CheckingLLM(**llm_kwargs(plan_20b_32k(), Path("/m")))

    await chunks(engine_for(llm), prompt_of(10, seed=-1))
    await chunks(engine_for(llm), prompt_of(10, seed=-2))

    assert [params.kwargs["seed"] for params in llm.sampling] == [2**64 - 1, 2**64 - 2]
    assert trtllm_sampling_kwargs(SamplingParams(seed=42))["seed"] == 42
    assert trtllm_sampling_kwargs(SamplingParams(seed=None))["seed"] is None
