"""Structured output in the reference engine: llguidance masks on numpy logits make even the tiny random
checkpoint write a harmony message whose JSON parses and validates (JSON schema, JSON mode, and a forced
tool call with its arguments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest

from gptoss_runtime import harmony
from gptoss_runtime.engine.base import GenerationRequest, SamplingParams
from gptoss_runtime.engine.guided import (
    TRTLLM_GUIDED_BACKEND,
    GuidedDecoding,
    GuidedDecodingError,
    for_tools,
    harmony_grammar,
    trtllm_guided_params,
)
from gptoss_runtime.engine.reference import ReferenceEngine
from gptoss_runtime.tokenizer import Tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 6},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["c", "f"]},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "days", "unit", "sunny"],
    "additionalProperties": False,
}


@pytest.fixture
async def engine(tiny_dir: Path) -> AsyncIterator[ReferenceEngine]:
    engine = ReferenceEngine.from_checkpoint(tiny_dir, max_batch_size=2, max_seq_len=512)
    yield engine
    await engine.close()


async def _generate(
    engine: ReferenceEngine, tokenizer: Tokenizer, guided: GuidedDecoding, seed: int, *, must_finish: bool = True
) -> list[harmony.ParsedMessage]:
    prompt = harmony.render_prompt([harmony.ChatMessage("user", "Weather?")], "low", tokenizer)
    sampling = SamplingParams(
        max_tokens=400, temperature=1.0, seed=seed, stop_token_ids=harmony.stop_token_ids(tokenizer), guided=guided
    )
    tokens = [t async for chunk in engine.generate(GenerationRequest("r", prompt, sampling)) for t in chunk.token_ids]
    if must_finish:  # by itself, not by max_tokens
        assert tokens[-1] in harmony.stop_token_ids(tokenizer)
    return harmony.parse_completion(tokens, tokenizer)


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_json_schema_output_validates(engine: ReferenceEngine, tiny_tokenizer: Tokenizer, seed: int) -> None:
    (message,) = await _generate(engine, tiny_tokenizer, GuidedDecoding("json_schema", SCHEMA), seed)
    assert message.channel == "final"
    jsonschema.validate(json.loads(message.text), SCHEMA)


async def test_json_mode_writes_an_object_in_the_final_channel(
    engine: ReferenceEngine, tiny_tokenizer: Tokenizer
) -> None:
    # A free-form object from random weights may not close within max_tokens; what it wrote is JSON so far.
    (message,) = await _generate(engine, tiny_tokenizer, GuidedDecoding("json_object"), 3, must_finish=False)
    assert message.channel == "final"
    assert message.text.lstrip().startswith("{")


async def test_a_required_tool_call_names_a_tool_and_validates(
    engine: ReferenceEngine, tiny_tokenizer: Tokenizer
) -> None:
    guided = for_tools([("get_weather", SCHEMA), ("get_time", {"type": "object", "properties": {}})])
    (message,) = await _generate(engine, tiny_tokenizer, guided, 4)
    assert message.channel == "commentary"
    assert message.content_type == "json"
    assert message.recipient in ("functions.get_weather", "functions.get_time")
    schema = guided.tools[message.recipient.removeprefix("functions.")]
    jsonschema.validate(json.loads(message.text), schema)


def test_the_grammar_writes_the_harmony_header_with_special_tokens() -> None:
    grammar = harmony_grammar(for_tools([("get_weather", None)]))
    assert '<|channel|> "commentary to=functions."' in grammar
    assert '"get_weather " <|constrain|> "json" <|message|> args_0 <|call|>' in grammar


async def test_an_unenforceable_schema_is_refused_naming_it(engine: ReferenceEngine, tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(GuidedDecodingError, match="cannot be enforced"):
        await _generate(engine, tiny_tokenizer, GuidedDecoding("json_schema", {"type": "object", "$ref": "#/nope"}), 0)


def test_tensorrt_llm_gets_the_same_grammar_for_its_llguidance_backend() -> None:
    guided = GuidedDecoding("json_schema", SCHEMA)
    assert trtllm_guided_params(guided) == {"grammar": harmony_grammar(guided)}
    assert TRTLLM_GUIDED_BACKEND == "llguidance"


def test_json_is_written_in_one_layout_unless_the_schema_says_otherwise() -> None:
    from gptoss_runtime.engine.guided import GuidedDecoding, harmony_grammar

    compact = harmony_grammar(GuidedDecoding("json_schema", {"type": "object"}))
    assert '"whitespace_flexible": false' in compact and '"key_separator": ": "' in compact
    own = harmony_grammar(
        GuidedDecoding("json_schema", {"type": "object", "x-guidance": {"whitespace_flexible": True}})
    )
    assert '"whitespace_flexible": true' in own
