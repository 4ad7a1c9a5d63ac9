"""The `gpt_oss` Triton model on the real tritonserver, with the scripted engine (deterministic
harmony output: reasoning, then the answer)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from serving_clients import ModelError, chat, generate, metric, scrape, stream
from serving_support import ServerProcess, wait_until

from gptoss_runtime import contract
from gptoss_runtime.triton_model.scripted import DEFAULT_ANALYSIS, DEFAULT_FINAL, ENDLESS_TRIGGER

pytestmark = pytest.mark.triton
MODEL = {"model": "gpt-oss-20b"}


def text_of(responses: list, channel: str) -> str:
    return "".join(response.text for response in responses if response.channel == channel)


async def test_grpc_stream_separates_reasoning_from_the_answer(scripted_server: ServerProcess) -> None:
    responses = await generate(scripted_server.grpc_url, messages=chat("Hi there"), max_tokens=200)

    assert text_of(responses, "analysis") == DEFAULT_ANALYSIS
    assert text_of(responses, "final") == DEFAULT_FINAL
    assert [r.finish_reason for r in responses[:-1]] == [""] * (len(responses) - 1)
    assert responses[-1].finish_reason == "stop"
    counts = [r.completion_tokens for r in responses]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert len({r.prompt_tokens for r in responses}) == 1 and responses[0].prompt_tokens > 10


async def test_max_tokens_ends_the_stream_with_length(scripted_server: ServerProcess) -> None:
    responses = await generate(scripted_server.grpc_url, text_input="Hi", max_tokens=7)

    assert responses[-1].finish_reason == "length"
    assert responses[-1].completion_tokens == 7


async def test_without_stream_the_text_comes_gathered_per_channel(scripted_server: ServerProcess) -> None:
    responses = await generate(scripted_server.grpc_url, text_input="Hi", stream=False)

    assert [(r.channel, r.text) for r in responses] == [("analysis", DEFAULT_ANALYSIS), ("final", DEFAULT_FINAL)]
    assert responses[-1].finish_reason == "stop"


async def test_stop_string_cuts_the_answer(scripted_server: ServerProcess) -> None:
    responses = await generate(scripted_server.grpc_url, text_input="Hi", stop=["help", "zzz"])

    assert text_of(responses, "final") == DEFAULT_FINAL[: DEFAULT_FINAL.index("help")]
    assert text_of(responses, "analysis") == DEFAULT_ANALYSIS  # stop strings apply to the answer only
    assert responses[-1].finish_reason == "stop"


def test_http_generate_stream_serves_text_input(scripted_server: ServerProcess) -> None:
    body = json.dumps({"text_input": "Hello", "max_tokens": 300, "reasoning_effort": "low"}).encode()
    request = urllib.request.Request(
        f"{scripted_server.http_url}/v2/models/gpt_oss/generate_stream", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        events = [json.loads(line[len(b"data: ") :]) for line in response if line.startswith(b"data: ")]

    answer = "".join(event["text_output"] for event in events if event["channel"] == "final")
    assert answer == DEFAULT_FINAL
    assert events[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"text_input": "Hi", "max_tokens": 0}, "max_tokens"),
        ({"text_input": "Hi", "max_tokens": 100_000}, "max_tokens"),
        ({"messages": "[not json"}, "messages"),
        ({"messages": json.dumps([{"role": "wizard", "content": "x"}])}, "messages[0].role"),
        ({"messages": json.dumps([{"role": "user", "content": 3}])}, "messages[0].content"),
        ({"text_input": "Hi", "messages": chat("Hi")}, "text_input/messages"),
        ({"max_tokens": 5}, "text_input/messages"),
        ({"text_input": "Hi", "reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"text_input": "Hi", "temperature": 9.0}, "temperature"),
        ({"text_input": "Hi", "top_p": 0.0}, "top_p"),
    ],
)
async def test_bad_inputs_are_refused_naming_the_input(
    scripted_server: ServerProcess, inputs: dict, named: str
) -> None:
    with pytest.raises(ModelError) as refused:
        await generate(scripted_server.grpc_url, **inputs)

    assert f"{named}:" in str(refused.value)


async def test_model_metrics_are_exported(scripted_server: ServerProcess) -> None:
    await generate(scripted_server.grpc_url, text_input="Count tokens", max_tokens=50)

    def success() -> float:
        return metric(scrape(scripted_server.metrics_url), contract.METRIC_REQUESTS, outcome="success", **MODEL)

    # The model pushes its metrics from a thread of its own every half second, off the engine's loop.
    await asyncio.to_thread(wait_until, lambda: success() >= 1, 10, "the request to be counted")
    samples = scrape(scripted_server.metrics_url)
    assert metric(samples, contract.METRIC_REQUESTS, outcome="success", **MODEL) >= 1
    assert metric(samples, contract.METRIC_REQUESTS, outcome="error", **MODEL) >= 0
    assert metric(samples, contract.METRIC_GENERATED_TOKENS, **MODEL) >= 50
    assert metric(samples, contract.METRIC_PROMPT_TOKENS, **MODEL) > 10
    assert metric(samples, f"{contract.METRIC_TIME_TO_FIRST_TOKEN}_count", **MODEL) >= 1
    assert metric(samples, f"{contract.METRIC_TIME_TO_FIRST_TOKEN}_bucket", le="+Inf", **MODEL) >= 1
    assert metric(samples, f"{contract.METRIC_TIME_TO_FIRST_TOKEN}_bucket", le="0.025", **MODEL) >= 0
    for gauge in (
        contract.METRIC_REQUESTS_RUNNING,
        contract.METRIC_REQUESTS_WAITING,
        contract.METRIC_KV_CACHE_UTILIZATION,
    ):
        assert metric(samples, gauge, **MODEL) >= 0
    # Triton's own counters (the text parser names counter samples with _total).
    assert metric(samples, "nv_inference_request_success_total", model="gpt_oss", version="1") >= 1


async def test_cancelling_the_stream_cancels_the_engine_request(scripted_server: ServerProcess) -> None:
    def outcome(name: str) -> float:
        return metric(scrape(scripted_server.metrics_url), contract.METRIC_REQUESTS, outcome=name, **MODEL)

    def running() -> float:
        return metric(scrape(scripted_server.metrics_url), contract.METRIC_REQUESTS_RUNNING, **MODEL)

    cancelled_before = outcome("cancelled")
    responses = stream(scripted_server.grpc_url, text_input=f"Go on forever {ENDLESS_TRIGGER}", max_tokens=4000)
    received = [await anext(responses) for _ in range(3)]
    await asyncio.to_thread(wait_until, lambda: running() == 1, 10, "the request to run")
    await responses.aclose()  # cancels the gRPC stream

    await asyncio.to_thread(wait_until, lambda: outcome("cancelled") == cancelled_before + 1, 10, "the cancel")
    await asyncio.to_thread(wait_until, lambda: running() == 0, 10, "no request running")
    assert all(not response.finish_reason for response in received)
    assert outcome("success") >= 0  # the server is still serving
    answer = await generate(scripted_server.grpc_url, text_input="still there?", max_tokens=300)
    assert answer[-1].finish_reason == "stop"


async def test_concurrent_streams_are_served_together(scripted_server: ServerProcess) -> None:
    results = await asyncio.gather(
        *(generate(scripted_server.grpc_url, text_input=f"request {index}", max_tokens=300) for index in range(6))
    )

    assert all(text_of(responses, "final") == DEFAULT_FINAL for responses in results)


async def test_many_requests_run_at_once(scripted_server: ServerProcess) -> None:
    def running() -> float:
        return metric(scrape(scripted_server.metrics_url), contract.METRIC_REQUESTS_RUNNING, **MODEL)

    streams = [
        stream(scripted_server.grpc_url, text_input=f"{ENDLESS_TRIGGER} {index}", max_tokens=4000) for index in range(4)
    ]
    for responses in streams:
        await anext(responses)

    await asyncio.to_thread(wait_until, lambda: running() == 4, 10, "four requests generating at once")
    for responses in streams:
        await responses.aclose()
    await asyncio.to_thread(wait_until, lambda: running() == 0, 10, "all four cancelled")
