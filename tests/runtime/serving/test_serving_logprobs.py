"""Logprobs in the `gpt_oss` model without Triton: only tokens that carry text get an entry, each with
its channel's step; a stop string drops the entries after the cut; the `logprobs` output's JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gptoss_runtime.metrics import RecordingMetrics
from gptoss_runtime.tokenizer import Tokenizer
from gptoss_runtime.triton_model import schema
from gptoss_runtime.triton_model.schema import TokenLogprobOut, logprob_json, parse_logprob_json
from gptoss_runtime.triton_model.scripted import DEFAULT_ANALYSIS, DEFAULT_FINAL, SCRIPTED_LOGPROB, ScriptedEngine
from gptoss_runtime.triton_model.service import (
    GenerationService,
    InputError,
    ModelRequest,
    StepOutput,
    gathered,
    parse_request,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    from gptoss_runtime.checkpoint import make_tiny_checkpoint

    return Tokenizer.from_dir(make_tiny_checkpoint(Path(tmp_path_factory.mktemp("tiny")) / "w"))


def request(**inputs: object) -> ModelRequest:
    arrays = {
        name: np.array([value.encode() if isinstance(value, str) else value], dtype=object)
        if isinstance(value, str)
        else np.array([value])
        for name, value in {"text_input": "Hi", **inputs}.items()
    }
    return parse_request(arrays.get, max_tokens_limit=1000, default_reasoning_effort="medium")


async def steps_of(tokenizer: Tokenizer, model_request: ModelRequest, interval: int = 3) -> list[StepOutput]:
    engine = ScriptedEngine.from_options(tokenizer, {"stream_interval": interval})
    service = GenerationService(engine, tokenizer, RecordingMetrics(), max_seq_len=1024)
    return [step async for step in service.stream("r", model_request)]


def text_of(entries: list[TokenLogprobOut]) -> str:
    return b"".join(entry.token for entry in entries).decode()


async def test_each_text_token_has_its_logprob_in_its_channel(tokenizer: Tokenizer) -> None:
    steps = await steps_of(tokenizer, request(logprobs=2))

    for channel, expected in (("analysis", DEFAULT_ANALYSIS), ("final", DEFAULT_FINAL)):
        entries = [entry for step in steps if step.channel == channel for entry in step.logprobs]
        assert text_of(entries) == expected  # special tokens and headers carry no entry
        assert "".join(step.text for step in steps if step.channel == channel) == expected
        assert all(entry.logprob == SCRIPTED_LOGPROB for entry in entries)
        assert all(len(entry.top) == 2 and entry.top[0] == (entry.token, SCRIPTED_LOGPROB) for entry in entries)


async def test_steps_align_text_and_entries(tokenizer: Tokenizer) -> None:
    for step in await steps_of(tokenizer, request(logprobs=0), interval=4):
        assert text_of(list(step.logprobs)) == step.text


async def test_no_logprobs_unless_asked(tokenizer: Tokenizer) -> None:
    steps = await steps_of(tokenizer, request())
    assert all(step.logprobs == () for step in steps)


async def test_a_stop_string_drops_the_entries_after_the_cut(tokenizer: Tokenizer) -> None:
    stop_at = DEFAULT_FINAL.index("How")
    steps = await steps_of(tokenizer, request(logprobs=0, stop=np.array([b"How"], dtype=object)))

    final = [step for step in steps if step.channel == "final"]
    assert "".join(step.text for step in final) == DEFAULT_FINAL[:stop_at]
    entries = [entry for step in final for entry in step.logprobs]
    # every released character is covered, and no token that starts after the cut is listed
    assert text_of(entries).startswith(DEFAULT_FINAL[:stop_at])
    assert len(text_of(entries[:-1])) < stop_at


async def test_gathered_steps_keep_every_entry(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine.from_options(tokenizer, {"stream_interval": 2})
    service = GenerationService(engine, tokenizer, RecordingMetrics(), max_seq_len=1024)
    runs = [run async for run in gathered(service.stream("r", request(logprobs=1)))]

    final = [run for run in runs if run.channel == "final"]
    assert text_of([entry for run in final for entry in run.logprobs]) == DEFAULT_FINAL


def test_logprobs_input_is_bounded() -> None:
    with pytest.raises(InputError) as refused:
        request(logprobs=21)
    assert refused.value.field == schema.LOGPROBS


def test_logprob_json_round_trips_partial_characters() -> None:
    entries = (
        TokenLogprobOut(b"Hi", -0.25, ((b"Hi", -0.25), (b"\xe2\x82", -3.0))),
        TokenLogprobOut(b"\xac", -1.5),
    )
    assert parse_logprob_json(logprob_json(entries)) == entries
