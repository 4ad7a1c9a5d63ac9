"""Added latency of the OpenAI gateway: the same requests straight to Triton gRPC and through the gateway.

    .venv/bin/python bench/gateway.py [--requests 300] [--max-tokens 16]
    .venv/bin/python bench/gateway.py --triton-grpc HOST:PORT --gateway-url http://HOST:PORT --model gpt-oss-20b

Without addresses it starts its own tritonserver (`gptoss-runtime serve --engine scripted` on a tiny
checkpoint, tokens without delay, so the engine costs almost nothing) and a gateway, on free ports.
Requests alternate between the two paths, one at a time, each measured from sending to the last byte
(a non-streaming chat completion through the gateway; the whole gRPC stream straight to Triton).
Prints the median and p99 of both, the added latency and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput

PROMPT = [{"role": "user", "content": "Say hello."}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s")


def runtime(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gptoss_runtime.cli import main; main()", *args]


@contextmanager
def own_servers() -> Iterator[tuple[str, str, str]]:
    """A scripted-engine tritonserver and a gateway in front of it; yields (grpc, gateway url, model)."""
    from gptoss_runtime.checkpoint import make_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as work:
        weights = make_tiny_checkpoint(Path(work) / "weights")
        http, grpc, metrics, openai_port = free_port(), free_port(), free_port(), free_port()
        log = (Path(work) / "server.log").open("wb")
        server = subprocess.Popen(
            runtime(
                "serve",
                f"--weights={weights}",
                "--engine=scripted",
                f"--http-port={http}",
                f"--grpc-port={grpc}",
                f"--metrics-port={metrics}",
                f"--model-repository={Path(work) / 'repository'}",
                "--exit-timeout=5",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        gateway = subprocess.Popen(
            runtime(
                "gateway",
                f"--triton-grpc=127.0.0.1:{grpc}",
                "--host=127.0.0.1",
                f"--port={openai_port}",
                f"--weights={weights}",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(f"http://127.0.0.1:{http}/v2/models/gpt_oss/ready", server)
            wait_for(f"http://127.0.0.1:{openai_port}/readyz", gateway)
            yield f"127.0.0.1:{grpc}", f"http://127.0.0.1:{openai_port}", "gpt-oss-20b"
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            log.close()


def triton_inputs(max_tokens: int, stream: bool) -> list[InferInput]:
    messages = InferInput("messages", [1], "BYTES")
    messages.set_data_from_numpy(np.array([json.dumps(PROMPT).encode()], dtype=np.object_))
    limit = InferInput("max_tokens", [1], "INT32")
    limit.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    streaming = InferInput("stream", [1], "BOOL")
    streaming.set_data_from_numpy(np.array([stream], dtype=np.bool_))
    return [messages, limit, streaming]


async def direct(client: grpc_aio.InferenceServerClient, max_tokens: int, stream: bool) -> float:
    """The same generation the gateway asks Triton for, read to its last response."""
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "gpt_oss", "inputs": triton_inputs(max_tokens, stream)}
        await finished.wait()

    started = time.perf_counter()
    call = client.stream_infer(requests())
    async for result, error in call:
        if error is not None:
            raise SystemExit(f"triton refused the request: {error}")
        if bytes(result.as_numpy("finish_reason")[0]):
            break
    elapsed = time.perf_counter() - started
    finished.set()  # half-close: Triton ends the stream (as the gateway does after the last response)
    return elapsed


async def through_gateway(session: aiohttp.ClientSession, url: str, model: str, max_tokens: int, stream: bool) -> float:
    """A chat completion (SSE when `stream`), read to its last byte."""
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "stream": stream}
    started = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        await response.read()
        if response.status != 200:
            raise SystemExit(f"the gateway answered {response.status}")
    return time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(grpc_url: str, gateway_url: str, model: str, requests: int, max_tokens: int) -> None:
    client = grpc_aio.InferenceServerClient(url=grpc_url)
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            for _ in range(10):  # warm up both paths (connections, first-request costs)
                await direct(client, max_tokens, stream)
                await through_gateway(session, gateway_url, model, max_tokens, stream)
            direct_s, gateway_s = [], []
            for _ in range(requests):
                direct_s.append(await direct(client, max_tokens, stream))
                gateway_s.append(await through_gateway(session, gateway_url, model, max_tokens, stream))
            print("streaming (SSE chunks vs a gRPC response per token):" if stream else "non-streaming:")
            report(direct_s, gateway_s, max_tokens)
    await client.close()


def report(direct_s: list[float], gateway_s: list[float], max_tokens: int) -> None:
    def ms(value: float) -> str:
        return f"{value * 1000:7.3f} ms"

    direct_median, gateway_median = statistics.median(direct_s), statistics.median(gateway_s)
    direct_p99, gateway_p99 = percentile(direct_s, 0.99), percentile(gateway_s, 0.99)
    print(f"  requests per path: {len(direct_s)} (max_tokens={max_tokens}, one at a time)")
    print(f"  straight to Triton gRPC: median {ms(direct_median)}   p99 {ms(direct_p99)}")
    print(f"  through the gateway:     median {ms(gateway_median)}   p99 {ms(gateway_p99)}")
    print(
        f"  added latency:           median {ms(gateway_median - direct_median)}   p99 {ms(gateway_p99 - direct_p99)}"
    )
    median_ratio, p99_ratio = gateway_median / direct_median, gateway_p99 / direct_p99
    print(f"  ratio gateway/direct:    median {median_ratio:6.2f}x   p99 {p99_ratio:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--triton-grpc", help="existing Triton gRPC HOST:PORT (with --gateway-url)")
    parser.add_argument("--gateway-url", help="existing gateway base URL")
    parser.add_argument("--model", default="gpt-oss-20b", help="model name the gateway serves")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.triton_grpc and args.gateway_url:
        asyncio.run(measure(args.triton_grpc, args.gateway_url, args.model, args.requests, args.max_tokens))
        return
    with own_servers() as (grpc_url, gateway_url, model):
        asyncio.run(measure(grpc_url, gateway_url, model, args.requests, args.max_tokens))


if __name__ == "__main__":
    main()
