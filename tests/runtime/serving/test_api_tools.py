"""Function calling through the whole stack: the `openai` client -> gateway -> real Triton -> the
scripted engine, which emits real harmony token sequences (analysis, a commentary preamble, a call
to `functions.get_weather` ending in <|call|>; then, once the history holds the result, a final answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from serving_support import ServerProcess, running_gateway

from gptoss_runtime.triton_model.scripted import (
    DEFAULT_ANALYSIS,
    DEFAULT_FINAL,
    TOOL_ANALYSIS,
    TOOL_ARGUMENTS,
    TOOL_NAME,
    TOOL_PREAMBLE,
    TOOL_TRIGGER,
)

pytestmark = pytest.mark.triton
MODEL = "gpt-oss-20b"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Gets the weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
ASK: list[Any] = [{"role": "user", "content": f"What is the weather in Paris? {TOOL_TRIGGER}"}]


@pytest.fixture(scope="module")
def gateway_url(
    scripted_server: ServerProcess, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with running_gateway(scripted_server, tiny_weights, tmp_path_factory.mktemp("gateway") / "gateway.log") as url:
        yield url


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0)


def test_a_model_call_comes_back_as_tool_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == TOOL_PREAMBLE  # the preamble, apart from the call
    assert getattr(choice.message, "reasoning", None) == TOOL_ANALYSIS
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == TOOL_NAME
    assert json.loads(call.function.arguments) == json.loads(TOOL_ARGUMENTS)


def test_tool_calls_stream_as_incremental_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, stream=True)
    content, arguments, finish = "", "", None
    heads = []
    for chunk in stream:
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            assert call.index == 0
            if call.id is not None:
                heads.append((call.id, call.function.name if call.function else None))
            arguments += (call.function.arguments or "") if call.function else ""
        finish = choice.finish_reason or finish
    assert content == TOOL_PREAMBLE
    assert len(heads) == 1
    assert heads[0][1] == TOOL_NAME
    assert json.loads(arguments) == json.loads(TOOL_ARGUMENTS)
    assert finish == "tool_calls"


def test_history_with_tool_calls_and_results_is_answered(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": message.content,
            "reasoning": getattr(message, "reasoning", None),  # sent back for the tool continuation
            "tool_calls": [call.model_dump()],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS)
    assert answer.choices[0].message.content == DEFAULT_FINAL
    assert getattr(answer.choices[0].message, "reasoning_content", None) == DEFAULT_ANALYSIS
    assert answer.choices[0].finish_reason == "stop"
    assert not answer.choices[0].message.tool_calls


def test_a_tool_result_for_an_unknown_call_id_is_a_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=[*ASK, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}],
            tools=TOOLS,
        )
    assert "messages[1].tool_call_id" in str(caught.value)


def test_a_named_tool_choice_must_name_a_tool(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    assert "tool_choice.function.name" in str(caught.value)


def test_logprobs_of_a_tool_calling_turn_cover_the_preamble_only(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, logprobs=True, top_logprobs=2)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    # neither the reasoning nor the call's arguments: the content the client sees (as OpenAI)
    assert "".join(entry.token for entry in choice.logprobs.content) == choice.message.content == TOOL_PREAMBLE
