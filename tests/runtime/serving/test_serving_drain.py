"""Graceful drain of a pod's serving path, as Kubernetes stops a pod: the gateway and tritonserver get
SIGTERM together while a stream is in flight. Readiness fails first, new work gets 503, the stream in
flight completes, then both processes exit cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from serving_support import ServerProcess, free_port, http_status, runtime_command, start_server, wait_until

from gptoss_runtime.triton_model.scripted import ENDLESS_TRIGGER

TOKENS = 600  # at 2 ms a token: a stream of about 1.2 s, long enough to be mid-way at SIGTERM
EXIT_TIMEOUT_S = 30


@pytest.fixture
def pod(tmp_path: Path, tiny_weights: Path) -> Iterator[tuple[ServerProcess, subprocess.Popen[bytes], str]]:
    server = start_server(tmp_path / "server", tiny_weights, "scripted", "--engine-option=scripted_token_delay_s=0.002")
    port = free_port()
    log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        runtime_command(
            "gateway",
            f"--triton-grpc={server.grpc_url}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--weights={tiny_weights}",
            "--drain-timeout=20",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/readyz") == 200, 30, "the gateway to be ready")
        yield server, gateway, url
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        log.close()
        server.stop()


async def test_sigterm_mid_stream_drains_and_the_client_gets_the_whole_answer(
    pod: tuple[ServerProcess, subprocess.Popen[bytes], str],
) -> None:
    server, gateway, url = pod
    body = {
        "model": "gpt-oss-20b",
        "messages": [{"role": "user", "content": ENDLESS_TRIGGER}],
        "max_tokens": TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        lines = [await response.content.readline() for _ in range(3)]  # the stream is under way
        gateway.send_signal(signal.SIGTERM)  # the kubelet signals every container of the pod at once
        server.process.send_signal(signal.SIGTERM)

        await wait_not_ready(session, url)
        refused = await session.post(f"{url}/v1/chat/completions", json=body)
        assert refused.status == 503 and refused.headers["Retry-After"]

        lines += [line async for line in response.content]

    events = [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]
    assert lines[-2].strip() == b"data: [DONE]"
    assert [event["choices"][0]["finish_reason"] for event in events if event["choices"]][-1] == "length"
    assert events[-1]["usage"]["completion_tokens"] == TOKENS
    assert gateway.wait(timeout=EXIT_TIMEOUT_S) == 0
    assert server.process.wait(timeout=EXIT_TIMEOUT_S) == 0


async def wait_not_ready(session: aiohttp.ClientSession, url: str) -> None:
    """The signal is handled asynchronously: ask until readiness fails (bounded)."""
    for _ in range(200):
        if (await session.get(f"{url}/readyz")).status == 503:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway stayed ready after SIGTERM")
