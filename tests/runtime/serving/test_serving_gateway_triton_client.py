"""The gateway's Triton client against the real tritonserver (scripted engine): generations share
long-lived gRPC calls, and an abandoned or refused generation leaves the client working."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving_clients import metric, scrape
from serving_support import ServerProcess, start_server, wait_until

from gptoss_runtime import contract
from gptoss_runtime.gateway.triton import (
    IDLE_CALL_SECONDS,
    GenerationInputs,
    Step,
    TritonClient,
    TritonRequestError,
)
from gptoss_runtime.triton_model.scripted import DEFAULT_FINAL, ENDLESS_TRIGGER

pytestmark = pytest.mark.triton
MODEL_NAME = "gpt-oss-20b"


def inputs(content: str = "Hello", **options: object) -> GenerationInputs:
    return GenerationInputs(messages=[{"role": "user", "content": content}], **options)  # type: ignore[arg-type]


@pytest.fixture
async def client(scripted_server: ServerProcess) -> AsyncIterator[TritonClient]:
    triton = TritonClient(scripted_server.grpc_url)
    yield triton
    await triton.close()


async def answer(client: TritonClient, request_id: str, generation: GenerationInputs) -> list[Step]:
    return [step async for step in client.generate(request_id, generation)]


def final_text(steps: list[Step]) -> str:
    return "".join(step.text for step in steps if step.channel == "final")


async def test_sequential_generations_reuse_one_call(client: TritonClient) -> None:
    for index in range(3):
        steps = await answer(client, f"seq-{index}", inputs(stream=index % 2 == 0))
        assert final_text(steps) == DEFAULT_FINAL
        assert steps[-1].finish_reason == "stop"
        assert client.idle_calls == 1


async def test_concurrent_generations_get_calls_of_their_own(client: TritonClient) -> None:
    results = await asyncio.gather(*(answer(client, f"par-{index}", inputs()) for index in range(3)))

    assert [final_text(steps) for steps in results] == [DEFAULT_FINAL] * 3
    assert client.idle_calls == 3


async def test_a_refused_request_closes_its_call_and_the_next_one_works(client: TritonClient) -> None:
    await answer(client, "warm", inputs())
    with pytest.raises(TritonRequestError) as refused:
        await answer(client, "too-long", inputs(max_tokens=10**6))
    assert refused.value.field == "max_tokens"
    assert client.idle_calls == 0

    assert final_text(await answer(client, "after-refusal", inputs())) == DEFAULT_FINAL
    assert client.idle_calls == 1


async def test_idle_calls_are_closed_after_a_while_and_on_release(client: TritonClient) -> None:
    await asyncio.gather(*(answer(client, f"burst-{index}", inputs()) for index in range(2)))
    assert client.idle_calls == 2

    await asyncio.sleep(IDLE_CALL_SECONDS + 0.5)  # the expiry itself is what is under test
    assert client.idle_calls == 0

    await answer(client, "again", inputs())
    client.release_idle_calls()
    assert client.idle_calls == 0


async def test_an_abandoned_generation_is_cancelled_and_its_call_dropped(
    client: TritonClient, scripted_server: ServerProcess
) -> None:
    def cancelled() -> float:
        return metric(
            scrape(scripted_server.metrics_url), contract.METRIC_REQUESTS, outcome="cancelled", model=MODEL_NAME
        )

    await answer(client, "warm", inputs())  # one idle call to borrow
    before = cancelled()
    steps = client.generate("endless", inputs(f"Go on {ENDLESS_TRIGGER}", max_tokens=4000))
    for _ in range(3):
        await anext(steps)
    await steps.aclose()

    assert client.idle_calls == 0
    await asyncio.to_thread(wait_until, lambda: cancelled() == before + 1, 10, "the engine request to be cancelled")
    assert final_text(await answer(client, "after-cancel", inputs())) == DEFAULT_FINAL


async def test_triton_stops_cleanly_under_idle_calls_and_the_client_then_fails_clearly(
    tmp_path: Path, tiny_weights: Path
) -> None:
    server = start_server(tmp_path / "own", tiny_weights, "scripted")
    triton = TritonClient(server.grpc_url)
    try:
        await asyncio.gather(*(answer(triton, f"idle-{index}", inputs()) for index in range(2)))
        assert triton.idle_calls == 2

        # Triton stops with idle calls open: they close after IDLE_CALL_SECONDS, within its exit timeout,
        # so it still unloads the model and exits cleanly.
        await asyncio.to_thread(server.stop_cleanly)

        with pytest.raises(TritonRequestError, match="unreachable"):
            await asyncio.wait_for(answer(triton, "after-stop", inputs()), timeout=30)
        assert not await triton.is_ready()
    finally:
        await triton.close()
        server.stop()
