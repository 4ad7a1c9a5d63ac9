"""Added latency of the OpenAI gateway: the same requests straight to Triton gRPC and through the gateway.

    .venv/bin/python bench/gateway.py [--requests 300] [--max-tokens 16]
    .venv/bin/python bench/gateway.py --triton-grpc HOST:PORT --gateway-url http://HOST:PORT --model gpt-oss-20b

Without addresses it starts its own tritonserver (`gptoss-runtime serve --engine scripted` on a tiny
checkpoint, tokens without delay, so the engine costs almost nothing) and a gateway, on free ports.
Three paths ask Triton for the same generation (same messages, max_tokens, stream flag and requested
outputs), one request at a time, their order rotating from round to round:

- straight to Triton gRPC with tritonclient, a new stream per request (what a client of Triton does);
- straight to Triton on one long-lived gRPC stream with hand-built protobuf requests (the gateway's own
  way to Triton, so the gap to it is the HTTP hop and the OpenAI translation alone);
- a chat completion through the gateway (SSE when streaming), read to its last byte.

Each is timed from sending to the last response. Prints the medians and p99s, the latency the gateway
adds over both direct paths and the ratio to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]
import numpy as np
import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput, InferRequestedOutput, service_pb2, service_pb2_grpc

PROMPT = [{"role": "user", "content": "Say hello."}]
OUTPUTS = ("text_output", "channel", "prompt_tokens", "completion_tokens", "finish_reason")
_ids = itertools.count()


def next_id() -> str:
    return f"bench-{next(_ids)}"


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


def request_inputs(max_tokens: int, stream: bool) -> list[tuple[str, str, bytes]]:
    """(name, Triton type, raw element) of each input: the same inputs the gateway sends for the chat
    completion below (`stream` only when false, as the gateway does)."""
    messages = json.dumps(PROMPT).encode()
    inputs = [("messages", "BYTES", struct.pack("<I", len(messages)) + messages)]
    inputs.append(("max_tokens", "INT32", struct.pack("<i", max_tokens)))
    if not stream:
        inputs.append(("stream", "BOOL", b"\x00"))
    return inputs


def triton_inputs(max_tokens: int, stream: bool) -> list[InferInput]:
    """`request_inputs` as tritonclient's tensors."""
    messages = InferInput("messages", [1], "BYTES")
    messages.set_data_from_numpy(np.array([json.dumps(PROMPT).encode()], dtype=np.object_))
    limit = InferInput("max_tokens", [1], "INT32")
    limit.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    if stream:
        return [messages, limit]
    streaming = InferInput("stream", [1], "BOOL")
    streaming.set_data_from_numpy(np.array([False], dtype=np.bool_))
    return [messages, limit, streaming]


def is_last(response: Any) -> bool:
    """The last response carries a finish reason (a BYTES element longer than its 4-byte length)."""
    names = [output.name for output in response.outputs]
    return len(response.raw_output_contents[names.index("finish_reason")]) > 4


async def direct(client: grpc_aio.InferenceServerClient, max_tokens: int, stream: bool) -> float:
    """The same generation the gateway asks Triton for, on a new gRPC stream (tritonclient's way), timed
    to the last response; the stream is then half-closed and read to its end, outside the timing."""
    finished = asyncio.Event()
    outputs = [InferRequestedOutput(name) for name in OUTPUTS]

    async def requests() -> AsyncIterator[dict[str, Any]]:
        inputs = triton_inputs(max_tokens, stream)
        yield {"model_name": "gpt_oss", "inputs": inputs, "outputs": outputs, "request_id": next_id()}
        await finished.wait()

    started = time.perf_counter()
    call = client.stream_infer(requests())
    elapsed = None
    async for result, error in call:
        if error is not None:
            raise SystemExit(f"triton refused the request: {error}")
        if is_last(result.get_response()):
            elapsed = time.perf_counter() - started
            finished.set()  # half-close: Triton ends the stream (never cancel it after the last response)
    if elapsed is None:
        raise SystemExit("triton ended the stream without a finish reason")
    return elapsed


class LongLivedStream:
    """Straight to Triton on one long-lived gRPC stream with protobuf requests built by hand: what the
    gateway itself does, so the gap to it is the HTTP hop and the OpenAI translation alone."""

    def __init__(self, grpc_url: str) -> None:
        self.channel = grpc.aio.insecure_channel(grpc_url)
        self.call = service_pb2_grpc.GRPCInferenceServiceStub(self.channel).ModelStreamInfer()

    async def generate(self, max_tokens: int, stream: bool) -> float:
        started = time.perf_counter()  # building the request counts, as on the other paths
        request = service_pb2.ModelInferRequest(model_name="gpt_oss", id=next_id())
        for name, datatype, raw in request_inputs(max_tokens, stream):
            request.inputs.add(name=name, datatype=datatype, shape=[1])
            request.raw_input_contents.append(raw)
        for name in OUTPUTS:
            request.outputs.add(name=name)
        await self.call.write(request)
        while True:
            response = await self.call.read()
            if response is grpc.aio.EOF or response.error_message:
                raise SystemExit(f"triton refused the request: {response}")
            if is_last(response.infer_response):
                return time.perf_counter() - started

    async def close(self) -> None:
        await self.call.done_writing()
        while await self.call.read() is not grpc.aio.EOF:
            pass
        await self.channel.close()


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
    long_lived = LongLivedStream(grpc_url)
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            paths: dict[str, Callable[[], Awaitable[float]]] = {
                "direct": partial(direct, client, max_tokens, stream),
                "long-lived": partial(long_lived.generate, max_tokens, stream),
                "gateway": partial(through_gateway, session, gateway_url, model, max_tokens, stream),
            }
            for _ in range(10):  # warm up every path (connections, first-request costs)
                for path in paths.values():
                    await path()
            timings: dict[str, list[float]] = {name: [] for name in paths}
            order = list(paths)
            for index in range(requests):
                # Rotate the order: a request can be slowed by the server's cleanup of the one before.
                for name in order[index % 3 :] + order[: index % 3]:
                    timings[name].append(await paths[name]())
            print("streaming (SSE chunks vs a gRPC response per token):" if stream else "non-streaming:")
            report(timings["direct"], timings["long-lived"], timings["gateway"], max_tokens)
    await long_lived.close()
    await client.close()


def report(direct_s: list[float], long_lived_s: list[float], gateway_s: list[float], max_tokens: int) -> None:
    def ms(value: float) -> str:
        return f"{value * 1000:7.3f} ms"

    def line(label: str, values: list[float]) -> None:
        print(f"  {label:<34} median {ms(statistics.median(values))}   p99 {ms(percentile(values, 0.99))}")

    def added(label: str, base: list[float]) -> None:
        median = statistics.median(gateway_s) - statistics.median(base)
        p99 = percentile(gateway_s, 0.99) - percentile(base, 0.99)
        print(f"  {label:<34} median {ms(median)}   p99 {ms(p99)}")

    print(f"  requests per path: {len(direct_s)} (max_tokens={max_tokens}, one at a time)")
    line("straight to Triton gRPC:", direct_s)
    line("  ... on one long-lived stream:", long_lived_s)
    line("through the gateway:", gateway_s)
    added("added latency:", direct_s)
    added("  ... vs the long-lived stream:", long_lived_s)
    median_ratio = statistics.median(gateway_s) / statistics.median(direct_s)
    p99_ratio = percentile(gateway_s, 0.99) / percentile(direct_s, 0.99)
    print(f"  {'ratio gateway/direct:':<34} median {median_ratio:6.2f}x   p99 {p99_ratio:6.2f}x")


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
