"""Structured outputs through the whole stack on the tiny random checkpoint (reference engine, real
Triton): the `openai` client's `response_format` json_schema comes back as schema-valid JSON, and
`tool_choice: required` as a valid call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from serving_support import ServerProcess, running_gateway

pytestmark = pytest.mark.triton
MODEL = "gpt-oss-20b"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 6}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(
    reference_server: ServerProcess, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with running_gateway(reference_server, tiny_weights, log) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_json_schema_response_is_schema_valid(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Plan a trip."}],
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}},
        max_tokens=300,
        seed=7,
    )
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), SCHEMA)


def test_required_tool_choice_returns_a_valid_call(client: openai.OpenAI) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "plan_trip", "parameters": SCHEMA}}]
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Plan a trip."}],
        tools=tools,
        tool_choice="required",
        max_tokens=300,
        seed=3,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "plan_trip"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMA)


def test_an_unknown_response_format_is_a_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "xml"},  # type: ignore[arg-type,typeddict-item]
        )
    assert "response_format.type" in str(caught.value)
