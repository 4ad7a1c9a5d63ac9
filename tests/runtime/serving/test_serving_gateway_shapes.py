"""The gateway's HTTP and OpenAI shapes against a fake Triton client (no tritonserver needed)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gptoss_runtime.gateway.app import GatewayConfig, make_app
from gptoss_runtime.gateway.triton import GenerationInputs, Step, TritonRequestError

MODEL = "gpt-oss-120b"
REASONING = [Step("Think", "analysis", 50, 3, ""), Step(" more.", "analysis", 50, 5, "")]
ANSWER = [Step("Hi", "final", 50, 9, ""), Step(" there", "final", 50, 10, ""), Step("", "final", 50, 10, "stop")]


class FakeTriton:
    """Stands in for `TritonClient`: replays steps, records what it was asked and whether it was closed."""

    def __init__(self, steps: list[Step], error: TritonRequestError | None = None, error_after: int = 0) -> None:
        self.steps = steps
        self.error = error
        self.error_after = error_after
        self.requests: list[GenerationInputs] = []
        self.finished_normally = False

    async def is_ready(self) -> bool:
        return True

    def release_idle_calls(self) -> None:
        return

    async def close(self) -> None:
        return

    async def generate(self, request_id: str, inputs: GenerationInputs) -> AsyncGenerator[Step, None]:
        self.requests.append(inputs)
        for index, step in enumerate(self.steps):
            if self.error is not None and index == self.error_after:
                raise self.error
            yield step
        self.finished_normally = True


async def client_for(fake: FakeTriton) -> AsyncIterator[TestClient[Any, Any]]:
    app = make_app(GatewayConfig(triton_grpc="unused:0", model_name=MODEL, max_tokens_limit=1000), client=fake)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        yield client


async def post(fake: FakeTriton, path: str, body: dict[str, Any]) -> tuple[int, str]:
    async for client in client_for(fake):
        response = await client.post(path, json=body)
        return response.status, await response.text()
    raise AssertionError("unreachable")


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                payload = line[len("data: ") :]
                data = payload if payload == "[DONE]" else json.loads(payload)
        events.append((name, data))
    return events


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]}


async def test_non_streaming_chat_asks_triton_for_gathered_text() -> None:
    fake = FakeTriton(REASONING + ANSWER)
    status, text = await post(fake, "/v1/chat/completions", {**CHAT, "max_completion_tokens": 50, "seed": 4})

    body = json.loads(text)
    assert status == 200
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi there",
        "reasoning": "Think more.",  # current vLLM's name
        "reasoning_content": "Think more.",  # the earlier name, still read by clients
    }
    assert body["usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 10,
        "total_tokens": 60,
        "completion_tokens_details": {"reasoning_tokens": 5},
    }
    sent = fake.requests[0]
    assert sent.stream is False and sent.max_tokens == 50 and sent.seed == 4
    assert sent.messages == [{"role": "user", "content": "Hello"}]


async def test_streaming_chat_chunks() -> None:
    fake = FakeTriton(REASONING + ANSWER)
    status, text = await post(fake, "/v1/chat/completions", {**CHAT, "stream": True})

    events = [data for _, data in sse_events(text)]
    assert status == 200 and events[-1] == "[DONE]"
    deltas = [event["choices"][0]["delta"] for event in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d.get("reasoning_content") for d in deltas[1:3]] == ["Think", " more."]
    assert [d.get("content") for d in deltas[3:5]] == ["Hi", " there"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert fake.requests[0].stream is True and fake.finished_normally


async def test_responses_events_put_reasoning_first_and_the_message_second() -> None:
    fake = FakeTriton(REASONING + ANSWER)
    status, text = await post(fake, "/v1/responses", {"model": MODEL, "input": "Hello", "stream": True})

    events = sse_events(text)
    assert status == 200
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    types = [name for name, _ in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    message_events = [data for _, data in events if data["type"].startswith("response.output_text")]
    assert {event["output_index"] for event in message_events} == {1}
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert [item["type"] for item in completed["output"]] == ["reasoning", "message"]
    assert completed["output"][1]["content"][0]["text"] == "Hi there"
    assert completed["usage"]["output_tokens_details"]["reasoning_tokens"] == 5


async def test_responses_without_reasoning_has_only_the_message() -> None:
    fake = FakeTriton(ANSWER)
    status, text = await post(fake, "/v1/responses", {"model": MODEL, "input": [{"role": "user", "content": "Hi"}]})

    body = json.loads(text)
    assert status == 200
    assert [item["type"] for item in body["output"]] == ["message"]
    assert body["output"][0]["content"][0]["text"] == "Hi there"


@pytest.mark.parametrize(
    ("error", "status", "param", "error_type"),
    [
        (
            TritonRequestError("messages: the prompt has 5000 tokens", field="messages"),
            400,
            "messages",
            "invalid_request_error",
        ),
        (TritonRequestError("generation failed: out of memory"), 502, None, "server_error"),
    ],
)
async def test_triton_refusals_map_to_http_errors(
    error: TritonRequestError, status: int, param: str | None, error_type: str
) -> None:
    got_status, text = await post(FakeTriton(ANSWER, error=error), "/v1/chat/completions", CHAT)

    body = json.loads(text)
    assert got_status == status
    assert body["error"]["param"] == param and body["error"]["type"] == error_type


async def test_an_error_mid_stream_ends_the_sse_with_an_error_event() -> None:
    fake = FakeTriton(ANSWER, error=TritonRequestError("generation failed: engine died"), error_after=1)
    status, text = await post(fake, "/v1/chat/completions", {**CHAT, "stream": True})

    events = [data for _, data in sse_events(text)]
    assert status == 200
    assert events[-1]["error"]["type"] == "server_error" and "engine died" in events[-1]["error"]["message"]


async def test_unknown_paths_and_methods_get_openai_errors() -> None:
    async for client in client_for(FakeTriton(ANSWER)):
        missing = await client.get("/v1/nothing")
        wrong_method = await client.get("/v1/chat/completions")
        assert missing.status == 404 and "error" in await missing.json()
        assert wrong_method.status == 405 and "error" in await wrong_method.json()
