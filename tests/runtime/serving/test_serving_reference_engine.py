"""The `gpt_oss` model with the real reference engine (numpy) on the tiny checkpoint."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import openai
import pytest
from serving_clients import chat, generate, metric, scrape
from serving_support import ServerProcess, running_gateway, wait_until

from gptoss_runtime import contract

pytestmark = pytest.mark.triton


async def test_reference_engine_streams_through_triton(reference_server: ServerProcess) -> None:
    responses = await generate(
        reference_server.grpc_url, messages=chat("What is the capital of France?"), max_tokens=12, seed=7
    )

    assert responses[-1].finish_reason in ("stop", "length")
    assert 1 <= responses[-1].completion_tokens <= 12
    assert {response.channel for response in responses} <= {"analysis", "commentary", "final"}

    def generated() -> float:
        return metric(scrape(reference_server.metrics_url), contract.METRIC_GENERATED_TOKENS, model="gpt-oss-20b")

    # pushed by the model's metrics thread every half second
    await asyncio.to_thread(
        wait_until, lambda: generated() >= responses[-1].completion_tokens, 10, "the tokens to be counted"
    )


async def test_same_seed_gives_the_same_completion(reference_server: ServerProcess) -> None:
    def text(responses: list) -> str:
        return "".join(f"{r.channel}:{r.text}" for r in responses)

    first = await generate(reference_server.grpc_url, text_input="Count to ten", max_tokens=10, seed=3)
    second = await generate(reference_server.grpc_url, text_input="Count to ten", max_tokens=10, seed=3)

    assert text(first) == text(second)


def test_reference_engine_over_http_generate_stream(reference_server: ServerProcess) -> None:
    body = json.dumps({"text_input": "Hello", "max_tokens": 6, "temperature": 0.0}).encode()
    request = urllib.request.Request(
        f"{reference_server.http_url}/v2/models/gpt_oss/generate_stream", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        events = [json.loads(line[len(b"data: ") :]) for line in response if line.startswith(b"data: ")]

    assert events[-1]["finish_reason"] in ("stop", "length")
    assert events[-1]["completion_tokens"] <= 6


def test_openai_client_through_the_gateway_with_the_reference_engine(
    reference_server: ServerProcess, tiny_weights: Path, tmp_path: Path
) -> None:
    with running_gateway(reference_server, tiny_weights, tmp_path / "gateway.log") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(
            model="gpt-oss-20b", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, seed=1
        )

    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 8
