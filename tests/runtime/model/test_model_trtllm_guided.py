"""Structured output on GPU pods: the LLM is loaded with llguidance as its guided-decoding backend, and a
request's `GuidedDecoding` becomes `GuidedDecodingParams(grammar=...)` with the same harmony grammar the
reference engine enforces (a stand-in LLM; TensorRT-LLM needs a GPU)."""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_model_trtllm_stand_in import make_plan

from gptoss_runtime.engine.base import EngineRequestError, GenerationRequest, SamplingParams
from gptoss_runtime.engine.guided import GuidedDecoding, for_tools, harmony_grammar
from gptoss_runtime.engine.trtllm import TrtllmEngine, llm_kwargs, trtllm_sampling_kwargs

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@dataclass
class StandInGuidedParams:  # tensorrt_llm.llmapi.GuidedDecodingParams
    grammar: str | None = None
    json: Any = None


class RecordingLLM:
    def __init__(self) -> None:
        self.params: Any = None

    def generate_async(self, prompt: list[int], sampling_params: Any, streaming: bool) -> Any:
        self.params = sampling_params

        class Done:
            def __aiter__(self) -> AsyncIterator[Any]:
                return self._iterate()

            async def _iterate(self) -> AsyncIterator[Any]:
                completion = types.SimpleNamespace(token_ids=[1], finish_reason="length", stop_reason=None)
                yield types.SimpleNamespace(outputs=[completion], finished=True)

            def abort(self) -> None:
                return None

        return Done()


def test_the_llm_loads_llguidance_as_its_guided_decoding_backend() -> None:
    assert llm_kwargs(make_plan(), Path("/m"))["guided_decoding_backend"] == "llguidance"


def test_a_guided_request_maps_to_the_harmony_grammar() -> None:
    guided = GuidedDecoding("json_schema", SCHEMA)

    kwargs = trtllm_sampling_kwargs(SamplingParams(guided=guided))

    assert kwargs["guided_decoding"] == {"grammar": harmony_grammar(guided)}
    assert "guided_decoding" not in trtllm_sampling_kwargs(SamplingParams())


async def test_the_engine_passes_guided_decoding_params_per_request() -> None:
    llm = RecordingLLM()
    engine = TrtllmEngine(
        llm, lambda **kwargs: kwargs, guided_params_type=StandInGuidedParams, max_batch_size=2, max_seq_len=64
    )
    guided = for_tools([("get_weather", {"type": "object"})])

    async for _ in engine.generate(GenerationRequest("g", [1, 2], SamplingParams(max_tokens=4, guided=guided))):
        pass

    params = llm.params["guided_decoding"]
    assert isinstance(params, StandInGuidedParams)
    assert params.grammar == harmony_grammar(guided)
    assert 'commentary to=functions." (call_0)' in params.grammar


async def test_without_guided_decoding_params_a_guided_request_is_refused() -> None:
    engine = TrtllmEngine(RecordingLLM(), lambda **kwargs: kwargs, max_batch_size=2)
    request = GenerationRequest("g", [1], SamplingParams(guided=GuidedDecoding("json_object")))
    with pytest.raises(EngineRequestError, match="GuidedDecodingParams"):
        async for _ in engine.generate(request):
            pass


def test_create_finds_guided_decoding_params_in_the_llm_api(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("tensorrt_llm")
    fake.LLM = lambda **kwargs: RecordingLLM()  # type: ignore[attr-defined]
    fake.SamplingParams = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    fake_llmapi = types.ModuleType("tensorrt_llm.llmapi")
    fake_llmapi.GuidedDecodingParams = StandInGuidedParams  # type: ignore[attr-defined]
    fake.llmapi = fake_llmapi  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", fake)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", fake_llmapi)
    monkeypatch.setenv("TRTLLM_ENABLE_PDL", "0")

    engine = TrtllmEngine.create(make_plan(), Path("/m"))

    assert engine._guided_params_type is StandInGuidedParams
