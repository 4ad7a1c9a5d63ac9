"""The Responses API through the whole stack (`openai` client -> gateway -> real Triton -> scripted
engine with real harmony sequences): tools and function-call items, every input item type, the
streaming event sequence, stored responses (GET, DELETE, previous_response_id) in memory and in a shared
Redis reached from a second gateway process, and the OpenAI Agents SDK running a tool loop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from serving_support import ServerProcess, free_port, running_gateway, wait_until

from gptoss_runtime.gateway.store import RESPONSES_STORE_ENV
from gptoss_runtime.triton_model.scripted import (
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
        "name": TOOL_NAME,
        "description": "Gets the weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
ASK = f"What is the weather in Paris? {TOOL_TRIGGER}"


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """The gateway process copies the environment when it starts: set the store URL for that moment."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _gateway(stack: ExitStack, server: ServerProcess, weights: Path, log: Path, store_url: str | None) -> str:
    with _environment(RESPONSES_STORE_ENV, store_url):
        return stack.enter_context(running_gateway(server, weights, log))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` (CI installs it)")
    port, work = free_port(), tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", "", "--appendonly", "no"],
        stdout=(work / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    import redis

    def answers() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.exceptions.RedisError:
            return False

    try:
        wait_until(answers, 20, "redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def gateways(
    scripted_server: ServerProcess, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("gateways")
    with ExitStack() as stack:
        yield {
            "memory": _gateway(stack, scripted_server, tiny_weights, logs / "memory.log", None),
            "shared_a": _gateway(stack, scripted_server, tiny_weights, logs / "a.log", redis_url),
            "shared_b": _gateway(stack, scripted_server, tiny_weights, logs / "b.log", redis_url),
        }


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def client(gateways: dict[str, str]) -> openai.OpenAI:
    return _client(gateways["memory"])


def test_a_tool_call_comes_back_as_items(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=ASK, tools=TOOLS)
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    reasoning, preamble, call = response.output
    assert reasoning.content is not None and reasoning.content[0].text == TOOL_ANALYSIS  # type: ignore[union-attr]
    assert preamble.content[0].text == TOOL_PREAMBLE  # type: ignore[union-attr]
    assert call.name == TOOL_NAME  # type: ignore[union-attr]
    assert json.loads(call.arguments) == json.loads(TOOL_ARGUMENTS)  # type: ignore[union-attr]
    assert call.call_id.startswith("call_")  # type: ignore[union-attr]
    assert response.status == "completed"


def test_function_call_output_input_is_answered(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        tools=TOOLS,
        input=[
            {"role": "user", "content": ASK},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
            {"type": "function_call", "call_id": "call_1", "name": TOOL_NAME, "arguments": TOOL_ARGUMENTS},
            {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "clear"}'},
        ],
    )
    assert response.output_text == DEFAULT_FINAL
    assert [item.type for item in response.output] == ["reasoning", "message"]


def test_stored_responses_continue_by_id_and_can_be_read_and_deleted(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input=ASK, tools=TOOLS, instructions="Be brief.")
    call = first.output[-1]
    follow = client.responses.create(
        model=MODEL,
        tools=TOOLS,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],  # type: ignore[union-attr]
    )
    assert follow.output_text == DEFAULT_FINAL
    assert follow.previous_response_id == first.id
    assert client.responses.retrieve(first.id).output[-1].type == "function_call"
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_response_not_in_this_replica_names_the_store_setting(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_elsewhere")
    assert "previous_response_id" in str(caught.value)
    assert RESPONSES_STORE_ENV in str(caught.value)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_streamed_events_follow_the_spec_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input=ASK, tools=TOOLS, stream=True))
    types = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.output_item.added") == types.count("response.output_item.done") == 3
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")  # type: ignore[union-attr]
    assert json.loads(arguments) == json.loads(TOOL_ARGUMENTS)
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == arguments  # type: ignore[union-attr]
    parts = [e for e in events if e.type == "response.content_part.added"]
    assert [p.part.type for p in parts] == ["reasoning_text", "output_text"]  # type: ignore[union-attr]


def test_a_stored_response_is_read_and_continued_from_another_gateway(gateways: dict[str, str]) -> None:
    made_on_a = _client(gateways["shared_a"]).responses.create(model=MODEL, input=ASK, tools=TOOLS)
    other = _client(gateways["shared_b"])
    assert other.responses.retrieve(made_on_a.id).output[-1].type == "function_call"
    call = made_on_a.output[-1]
    follow = other.responses.create(
        model=MODEL,
        tools=TOOLS,
        previous_response_id=made_on_a.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],  # type: ignore[union-attr]
    )
    assert follow.output_text == DEFAULT_FINAL
    assert _client(gateways["shared_a"]).responses.retrieve(follow.id).status == "completed"


def test_the_agents_sdk_runs_a_tool_loop(gateways: dict[str, str]) -> None:
    import agents

    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Gets the weather of a city."""
        calls.append(city)
        return f"Sunny in {city}"

    client = openai.AsyncOpenAI(base_url=f"{gateways['shared_a']}/v1", api_key="unused", max_retries=0)
    agent = agents.Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
    )
    result = asyncio.run(agents.Runner.run(agent, ASK, max_turns=4))
    assert calls == ["Paris"]
    assert result.final_output == DEFAULT_FINAL
