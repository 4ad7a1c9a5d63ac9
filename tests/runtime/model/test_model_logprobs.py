"""Log probabilities from the engines: the reference engine's log-softmax over its numpy logits, and
TensorRT-LLM's `CompletionOutput.logprobs` mapped by `TrtllmEngine` (a stand-in LLM)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gptoss_runtime.engine.base import GenerationRequest, SamplingParams, TokenLogprob
from gptoss_runtime.engine.numpy_model import GptOssNumpyModel, Segment
from gptoss_runtime.engine.reference import ReferenceEngine, token_logprob
from gptoss_runtime.engine.trtllm import TrtllmEngine, token_logprobs, trtllm_sampling_kwargs

PROMPT = [5, 17, 42, 99, 3, 250, 7]


def test_token_logprob_is_the_log_softmax_with_the_top_k_in_order() -> None:
    logits = np.array([1.0, 3.0, 2.0, 0.0])
    expected = logits - np.log(np.exp(logits).sum())

    result = token_logprob(logits, 2, top=2)

    assert result.logprob == pytest.approx(expected[2])
    assert [token for token, _ in result.top] == [1, 2]
    assert [value for _, value in result.top] == pytest.approx([expected[1], expected[2]])
    assert token_logprob(logits, 0, top=0).top == ()


async def test_reference_engine_reports_the_logprob_of_each_greedy_token(
    tiny_dir: Path, tiny_model: GptOssNumpyModel
) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=128)
    request = GenerationRequest("lp", PROMPT, SamplingParams(max_tokens=3, temperature=0.0, logprobs=3))
    try:
        chunks = [chunk async for chunk in engine.generate(request)]
    finally:
        await engine.close()

    tokens = [token for chunk in chunks for token in chunk.token_ids]
    entries = [entry for chunk in chunks for entry in chunk.logprobs or ()]
    assert len(entries) == len(tokens) == 3
    logits = tiny_model.forward([Segment(PROMPT, tiny_model.new_cache(64))])[0][: engine.sampled_vocab_size]
    shifted = logits.astype(np.float64) - logits.max()
    expected = shifted - np.log(np.exp(shifted).sum())
    assert entries[0].logprob == pytest.approx(expected[tokens[0]], abs=1e-6)
    # greedy: the chosen token is the most likely one, listed first among the top 3
    assert entries[0].top[0] == (tokens[0], pytest.approx(entries[0].logprob))
    assert len(entries[0].top) == 3


async def test_reference_engine_sends_no_logprobs_unless_asked(tiny_dir: Path) -> None:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=1, max_seq_len=128)
    try:
        chunks = [
            chunk async for chunk in engine.generate(GenerationRequest("x", PROMPT, SamplingParams(max_tokens=2)))
        ]
    finally:
        await engine.close()
    assert all(chunk.logprobs is None for chunk in chunks)


# ---- TensorRT-LLM ----


@dataclass
class Logprob:  # tensorrt_llm.executor.result.Logprob
    logprob: float
    rank: int | None = None


def test_trtllm_logprobs_map_to_sampling_params() -> None:
    assert "logprobs" not in trtllm_sampling_kwargs(SamplingParams())
    assert trtllm_sampling_kwargs(SamplingParams(logprobs=5))["logprobs"] == 5
    assert trtllm_sampling_kwargs(SamplingParams(logprobs=0))["logprobs"] == 1  # the sampled token's alone


def test_trtllm_token_logprob_dicts_become_token_logprobs() -> None:
    raw = [{7: Logprob(-0.1, 1), 8: Logprob(-2.5, 2), 9: Logprob(-3.0, 3)}, {4: Logprob(-1.0, 2), 5: Logprob(-0.5, 1)}]

    entries = token_logprobs(raw, [7, 4], top=2)

    assert entries[0] == TokenLogprob(-0.1, ((7, -0.1), (8, -2.5)))
    assert entries[1] == TokenLogprob(-1.0, ((5, -0.5), (4, -1.0)))
    assert token_logprobs([-0.25], [3], top=0) == (TokenLogprob(-0.25),)  # SimpleTokenLogprobs: floats


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[Any]
    finish_reason: str | None = None
    stop_reason: int | None = None


@dataclass
class Output:
    outputs: list[Completion]
    finished: bool = False


class StreamingLLM:
    """Cumulative token ids and logprobs, as TensorRT-LLM streams them."""

    def __init__(self, outputs: list[Output]) -> None:
        self.outputs = outputs
        self.params: Any = None

    def generate_async(self, prompt: list[int], sampling_params: Any, streaming: bool) -> Any:
        self.params = sampling_params
        outputs = self.outputs

        class Result:
            def __aiter__(self) -> Any:
                return self._iterate()

            async def _iterate(self) -> Any:
                for output in outputs:
                    yield output

            def abort(self) -> None:
                return None

        return Result()


async def test_trtllm_engine_streams_the_new_tokens_logprobs() -> None:
    lp = [{10: Logprob(-0.5)}, {11: Logprob(-0.7)}, {12: Logprob(-0.9)}]
    llm = StreamingLLM(
        [
            Output([Completion([10], lp[:1])]),
            Output([Completion([10, 11, 12], lp, "stop", 200002)], finished=True),
        ]
    )
    engine = TrtllmEngine(llm, lambda **kwargs: kwargs, max_batch_size=4)
    request = GenerationRequest("r", [1, 2], SamplingParams(max_tokens=8, stop_token_ids=(200002,), logprobs=0))

    chunks = [chunk async for chunk in engine.generate(request)]

    assert [chunk.token_ids for chunk in chunks] == [[10], [11, 12, 200002]]  # the stop token put back
    assert [entry.logprob for entry in chunks[0].logprobs or ()] == [-0.5]
    assert [entry.logprob for entry in chunks[1].logprobs or ()] == [-0.7, -0.9, 0.0]
    assert llm.params["logprobs"] == 1
