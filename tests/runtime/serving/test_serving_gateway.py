"""The OpenAI-compatible gateway in front of the real tritonserver (scripted engine), driven with the
`openai` Python client and raw HTTP for the error cases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from serving_clients import metric, scrape
from serving_support import ServerProcess, http_status, running_gateway, wait_until

from gptoss_runtime import contract
from gptoss_runtime.triton_model.scripted import DEFAULT_ANALYSIS, DEFAULT_FINAL, ENDLESS_TRIGGER

pytestmark = pytest.mark.triton
MODEL_NAME = "gpt-oss-20b"
USER = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def gateway_url(
    scripted_server: ServerProcess, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with running_gateway(scripted_server, tiny_weights, tmp_path_factory.mktemp("gateway") / "gateway.log") as url:
        yield url


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0)


def test_models_lists_the_deployment_model(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME


def test_health_and_readiness(gateway_url: str) -> None:
    assert http_status(f"{gateway_url}/healthz") == 200
    assert http_status(f"{gateway_url}/readyz") == 200


def test_chat_completion_keeps_reasoning_apart(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL_NAME, messages=USER, reasoning_effort="low")

    message = completion.choices[0].message
    assert message.content == DEFAULT_FINAL
    assert getattr(message, "reasoning_content", None) == DEFAULT_ANALYSIS
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 10
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_streaming_keeps_reasoning_apart(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )

    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join(d.content or "" for d in deltas) == DEFAULT_FINAL
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == DEFAULT_ANALYSIS
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_chat_max_tokens_reports_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=5)

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_responses_returns_text_and_reasoning(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL_NAME, input="Hello", reasoning={"effort": "high"})

    assert response.status == "completed"
    assert response.output_text == DEFAULT_FINAL
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].content is not None and reasoning[0].content[0].text == DEFAULT_ANALYSIS
    assert response.usage is not None and response.usage.output_tokens > 0


def test_responses_streaming_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL_NAME, input="Hello", instructions="Be brief.", stream=True))

    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    reasoning = "".join(event.delta for event in events if event.type == "response.reasoning_text.delta")
    assert text == DEFAULT_FINAL and reasoning == DEFAULT_ANALYSIS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.output_text == DEFAULT_FINAL


def test_responses_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL_NAME, input="Hello", max_output_tokens=4)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"


async def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": content_type}) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("chat/completions", {"model": "gpt-4o", "messages": USER}, 404, "model"),
        ("chat/completions", {"messages": USER}, 400, "model"),
        ("chat/completions", {"model": MODEL_NAME}, 400, "messages"),
        ("chat/completions", {"model": MODEL_NAME, "messages": []}, 400, "messages"),
        (
            "chat/completions",
            {"model": MODEL_NAME, "messages": [{"role": "bot", "content": "x"}]},
            400,
            "messages[0].role",
        ),
        (
            "chat/completions",
            {"model": MODEL_NAME, "messages": [{"role": "user", "content": 7}]},
            400,
            "messages[0].content",
        ),
        ("chat/completions", {"model": MODEL_NAME, "messages": USER, "max_tokens": 10**9}, 400, "max_tokens"),
        ("chat/completions", {"model": MODEL_NAME, "messages": USER, "max_tokens": 5000}, 400, "max_tokens"),
        ("chat/completions", {"model": MODEL_NAME, "messages": USER, "temperature": "hot"}, 400, "temperature"),
        (
            "chat/completions",
            {"model": MODEL_NAME, "messages": USER, "reasoning_effort": "max"},
            400,
            "reasoning_effort",
        ),
        ("chat/completions", {"model": MODEL_NAME, "messages": USER, "n": 3}, 400, "n"),
        ("chat/completions", {"model": MODEL_NAME, "messages": USER, "stop": [1]}, 400, "stop"),
        ("responses", {"model": MODEL_NAME}, 400, "input"),
        ("responses", {"model": MODEL_NAME, "input": [{"role": "tool", "content": "x"}]}, 400, "input[0].role"),
        ("responses", {"model": MODEL_NAME, "input": "x", "max_output_tokens": 0}, 400, "max_output_tokens"),
    ],
)
async def test_bad_requests_get_openai_errors_naming_the_field(
    gateway_url: str, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    got_status, error = await _post(f"{gateway_url}/v1/{path}", json.dumps(body).encode())

    assert got_status == status
    assert error["error"]["param"] == param
    assert param in error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error"


async def test_malformed_json_and_oversized_bodies_are_refused(gateway_url: str) -> None:
    status, error = await _post(f"{gateway_url}/v1/chat/completions", b'{"model": ')
    assert status == 400 and "not valid JSON" in error["error"]["message"]

    status, error = await _post(f"{gateway_url}/v1/chat/completions", b" " * (5 * 1024 * 1024))
    assert status == 413 and "limit" in error["error"]["message"]


def test_openai_client_sees_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "x"}], max_tokens=0)
    assert "max_tokens" in str(refused.value)


async def test_client_disconnect_cancels_the_generation(gateway_url: str, scripted_server: ServerProcess) -> None:
    def samples() -> dict:
        return scrape(scripted_server.metrics_url)

    def cancelled() -> float:
        return metric(samples(), contract.METRIC_REQUESTS, outcome="cancelled", model=MODEL_NAME)

    def running() -> float:
        return metric(samples(), contract.METRIC_REQUESTS_RUNNING, model=MODEL_NAME)

    before = cancelled()
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": f"Tell me everything {ENDLESS_TRIGGER}"}],
        "max_tokens": 4000,
        "stream": True,
    }
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway_url}/v1/chat/completions", json=body)
        assert response.status == 200
        for _ in range(5):
            await response.content.readline()
        await asyncio.to_thread(wait_until, lambda: running() == 1, 10, "the generation to run")
        response.close()  # drop the connection mid-stream

    await asyncio.to_thread(wait_until, lambda: cancelled() == before + 1, 10, "the engine request to be cancelled")
    await asyncio.to_thread(wait_until, lambda: running() == 0, 10, "no generation running")
