"""TrtllmEngine without a GPU: the plan -> LLM() mapping, and the engine driven by stand-in objects that
imitate TensorRT-LLM's LLM API (generate_async with cumulative outputs, abort, get_stats_async)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gptoss_runtime.engine.base import Engine, GenerationRequest, SamplingParams, TokenChunk
from gptoss_runtime.engine.trtllm import (
    TrtllmConfigError,
    TrtllmEngine,
    llm_kwargs,
    trtllm_sampling_kwargs,
    typed_llm_kwargs,
)
from gptoss_runtime.plan import EngineSettings, KvBudget, ServingPlan

RETURN, CALL = 200002, 200012


def make_plan(**engine: Any) -> ServingPlan:
    settings = {
        "tensor_parallel_size": 2,
        "moe_expert_parallel_size": 2,
        "moe_backend": "TRITON",
        "attention_data_parallel": False,
        "max_seq_len": 8192,
        "max_batch_size": 64,
        "max_num_tokens": 20000,
        "kv_cache_free_memory_fraction": 0.85,
        "kv_cache_dtype": "auto",
        "cuda_graph_batch_sizes": (64, 1, 8, 16, 32, 2, 4),
        "cuda_graph_padding": True,
        "environment": {"TRTLLM_ENABLE_PDL": "1"},
    } | engine
    budget = KvBudget(
        gpu_memory_gib=160,
        weights_gib=66,
        activation_headroom_gib=10,
        kv_cache_gib=70,
        kv_bytes_per_token=36864,
        kv_cache_tokens=2_000_000,
        max_concurrent_sequences=244,
    )
    return ServingPlan(
        model="gpt-oss-120b",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpus_per_replica=2,
        engine=EngineSettings(**settings),
        kv_budget=budget,
    )


def test_trtllm_stand_in_plan_maps_to_llm_arguments() -> None:
    kwargs = llm_kwargs(make_plan(), Path("/models/gpt-oss-120b"))
    assert kwargs == {
        "model": "/models/gpt-oss-120b",
        "tokenizer": "/models/gpt-oss-120b",
        "backend": "pytorch",
        "trust_remote_code": False,
        "tensor_parallel_size": 2,
        "moe_expert_parallel_size": 2,
        "enable_attention_dp": False,
        "max_seq_len": 8192,
        "max_batch_size": 64,
        "max_num_tokens": 20000,
        "enable_chunked_prefill": False,
        "stream_interval": 1,
        "moe_config": {"backend": "TRITON"},
        "kv_cache_config": {"free_gpu_memory_fraction": 0.85, "dtype": "auto"},
        "cuda_graph_config": {"enable_padding": True, "batch_sizes": [1, 2, 4, 8, 16, 32, 64]},
        "enable_iter_perf_stats": True,
        "guided_decoding_backend": "llguidance",
    }
    assert llm_kwargs(make_plan(kv_cache_dtype="fp8"), Path("/m"))["kv_cache_config"]["dtype"] == "fp8"


def test_trtllm_stand_in_refuses_moe_tensor_parallelism_on_triton() -> None:
    with pytest.raises(TrtllmConfigError, match="TRITON supports expert parallelism only"):
        llm_kwargs(make_plan(moe_expert_parallel_size=1), Path("/m"))
    assert llm_kwargs(make_plan(moe_expert_parallel_size=1, moe_backend="CUTLASS"), Path("/m"))
    with pytest.raises(TrtllmConfigError, match="must divide"):
        llm_kwargs(make_plan(tensor_parallel_size=2, moe_expert_parallel_size=3), Path("/m"))


@dataclass
class StandInConfig:
    kwargs: dict[str, Any]


def test_trtllm_stand_in_nested_configs_become_objects() -> None:
    kwargs = llm_kwargs(make_plan(), Path("/m"))
    typed = typed_llm_kwargs(kwargs, {"moe_config": lambda **kw: StandInConfig(kw), "kv_cache_config": None})
    assert typed["moe_config"] == StandInConfig({"backend": "TRITON"})
    assert typed["kv_cache_config"] == kwargs["kv_cache_config"]  # class missing: stays a dict


def test_trtllm_stand_in_sampling_parameters() -> None:
    greedy = trtllm_sampling_kwargs(SamplingParams(max_tokens=5, temperature=0.0, stop_token_ids=(RETURN, CALL)))
    assert greedy == {"max_tokens": 5, "stop_token_ids": [RETURN, CALL], "detokenize": False, "seed": None, "top_k": 1}
    sampled = trtllm_sampling_kwargs(SamplingParams(temperature=0.7, top_p=0.9, seed=3))
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"], "top_k" in sampled) == (0.7, 0.9, 3, False)


# ---- a stand-in for tensorrt_llm.LLM ----


@dataclass
class StandInCompletion:
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class StandInOutput:
    outputs: list[StandInCompletion]
    finished: bool = False


@dataclass
class StandInResult:
    """Like tensorrt_llm's RequestOutput in streaming mode: async-iterable, cumulative token ids."""

    steps: list[StandInOutput]
    gate: asyncio.Event | None = None
    aborted: bool = False

    def __aiter__(self) -> AsyncIterator[StandInOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StandInOutput]:
        for index, step in enumerate(self.steps):
            if self.gate is not None and index > 0:
                await self.gate.wait()
            yield step

    def abort(self) -> None:
        self.aborted = True


@dataclass
class StandInLLM:
    results: list[StandInResult]
    stats: list[Any] = field(default_factory=list)
    calls: list[tuple[list[int], Any, bool]] = field(default_factory=list)
    shut_down: bool = False

    def generate_async(self, prompt_token_ids: list[int], sampling_params: Any, streaming: bool) -> StandInResult:
        self.calls.append((prompt_token_ids, sampling_params, streaming))
        return self.results.pop(0)

    async def get_stats_async(self, poll_seconds: float) -> AsyncIterator[Any]:
        while self.stats:
            yield self.stats.pop(0)

    def shutdown(self) -> None:
        self.shut_down = True


@dataclass
class StandInSamplingParams:
    kwargs: dict[str, Any]


def stand_in_sampling(**kwargs: Any) -> StandInSamplingParams:
    return StandInSamplingParams(kwargs)


def cumulative(*steps: list[int], finish: str | None = "stop", stop_reason: int | None = RETURN) -> StandInResult:
    outputs = [StandInOutput([StandInCompletion(list(step))]) for step in steps]
    outputs[-1] = StandInOutput([StandInCompletion(list(steps[-1]), finish, stop_reason)], finished=True)
    return StandInResult(outputs)


def request(stop: tuple[int, ...] = (RETURN, CALL)) -> GenerationRequest:
    return GenerationRequest("r", [1, 2, 3], SamplingParams(max_tokens=10, stop_token_ids=stop))


async def chunks_of(engine: TrtllmEngine, req: GenerationRequest) -> list[TokenChunk]:
    return [chunk async for chunk in engine.generate(req)]


async def test_trtllm_stand_in_cumulative_outputs_become_increments() -> None:
    llm = StandInLLM([cumulative([7], [7, 8, 9], [7, 8, 9, 10, RETURN])])
    engine = TrtllmEngine(llm, stand_in_sampling, max_batch_size=4)
    assert isinstance(engine, Engine)
    chunks = await chunks_of(engine, request())
    assert chunks == [TokenChunk([7]), TokenChunk([8, 9]), TokenChunk([10, RETURN], "stop")]
    prompt, params, streaming = llm.calls[0]
    assert (prompt, streaming) == ([1, 2, 3], True)
    assert params.kwargs["stop_token_ids"] == [RETURN, CALL]
    stats = engine.stats()
    assert (stats.prompt_tokens_total, stats.generated_tokens_total, stats.requests_running) == (3, 5, 0)
    await engine.close()
    assert llm.shut_down


async def test_trtllm_stand_in_stop_token_left_out_is_put_back() -> None:
    llm = StandInLLM([cumulative([7], [7, 8], stop_reason=CALL), cumulative([7, 8], finish="length", stop_reason=None)])
    engine = TrtllmEngine(llm, stand_in_sampling, max_batch_size=4)
    assert await chunks_of(engine, request()) == [TokenChunk([7]), TokenChunk([8, CALL], "stop")]
    assert await chunks_of(engine, request()) == [TokenChunk([7, 8], "length")]


async def test_trtllm_stand_in_finish_reasons() -> None:
    llm = StandInLLM(
        [cumulative([1], finish="cancelled", stop_reason=None), cumulative([1], finish="timeout", stop_reason=None)]
    )
    engine = TrtllmEngine(llm, stand_in_sampling, max_batch_size=4)
    assert (await chunks_of(engine, request()))[-1].finish_reason == "cancelled"
    assert (await chunks_of(engine, request()))[-1].finish_reason == "length"


async def test_trtllm_stand_in_closing_early_aborts_the_request() -> None:
    result = cumulative([1], [1, 2], [1, 2, 3])
    result.gate = asyncio.Event()  # the second step never comes
    engine = TrtllmEngine(StandInLLM([result]), stand_in_sampling, max_batch_size=4)
    stream = engine.generate(request())
    assert await anext(stream) == TokenChunk([1])
    assert engine.stats().requests_running == 1
    await stream.aclose()
    assert result.aborted
    assert engine.stats().requests_running == 0


async def test_trtllm_stand_in_finished_requests_are_not_aborted() -> None:
    result = cumulative([1, RETURN])
    engine = TrtllmEngine(StandInLLM([result]), stand_in_sampling, max_batch_size=4)
    await chunks_of(engine, request())
    assert not result.aborted


async def test_trtllm_stand_in_iteration_stats() -> None:
    record = {
        "numActiveRequests": 3,
        "numQueuedRequests": 2,
        "kvCacheStats": {"usedNumBlocks": 30, "maxNumBlocks": 120},
    }
    llm = StandInLLM([cumulative([1, RETURN])], stats=[json.dumps(record)])
    engine = TrtllmEngine(llm, stand_in_sampling, max_batch_size=4, stats_poll_seconds=0.01)
    await chunks_of(engine, request())  # starts the stats poller

    async def polled() -> None:
        while True:
            if not llm.stats:
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(polled(), 5)
    await asyncio.sleep(0)
    stats = engine.stats()
    assert (stats.requests_waiting, stats.kv_cache_utilization) == (2, 0.25)
    engine.apply_iteration_stats({"kvCacheStats": {"usedNumBlocks": 500, "maxNumBlocks": 100}})
    assert engine.stats().kv_cache_utilization == 1.0
    await engine.close()


def test_trtllm_stand_in_create_imports_tensorrt_llm_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    created: dict[str, Any] = {}

    class FakeLLM:
        def __init__(self, **kwargs: Any) -> None:
            created.update(kwargs)

    fake = types.ModuleType("tensorrt_llm")
    fake.LLM = FakeLLM  # type: ignore[attr-defined]
    fake.SamplingParams = stand_in_sampling  # type: ignore[attr-defined]
    fake_llmapi = types.ModuleType("tensorrt_llm.llmapi")
    fake_llmapi.MoeConfig = lambda **kw: StandInConfig(kw)  # type: ignore[attr-defined]
    fake.llmapi = fake_llmapi  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", fake)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", fake_llmapi)
    monkeypatch.setenv("TRTLLM_ENABLE_PDL", "0")  # restored after the test
    engine = TrtllmEngine.create(make_plan(), Path("/models/x"))
    assert isinstance(engine, TrtllmEngine)
    assert created["moe_config"] == StandInConfig({"backend": "TRITON"})
    assert created["kv_cache_config"]["free_gpu_memory_fraction"] == 0.85  # no KvCacheConfig in the fake
    assert os.environ["TRTLLM_ENABLE_PDL"] == "1"  # the plan's environment is set before the import


def test_trtllm_module_loads_without_tensorrt_llm() -> None:
    code = "import sys, gptoss_runtime.engine.trtllm; assert 'tensorrt_llm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
