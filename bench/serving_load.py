"""Can the serving path carry an H100's token rate? Many concurrent streams through the real gateway and
the real tritonserver, the `gpt_oss` model's scripted engine producing tokens at a set rate.

    .venv/bin/python bench/serving_load.py [--streams 64 256] [--overload 1024] [--json]

For each stream count it starts `gptoss-runtime serve --engine scripted` on a tiny checkpoint with a
serving plan (batch size `--capacity`, `streamInterval` 20 as NVIDIA's gpt-oss recipes) and a gateway
admitting from that plan, both on loopback, then runs that many clients, each streaming
`--requests-per-stream` chat completions of `--tokens` tokens one after another over one keep-alive
HTTP/1.1 connection. The clients are plain asyncio streams, not aiohttp's client, and the load
generator's start-up objects are frozen out of its garbage collector: on 2 cores the load generator
competes with the path it measures, and aiohttp cost about 0.6 ms of CPU per request (1.7 against
1.1-1.25 CPU seconds for a 256-stream run), most of it when all streams turn over at once. The engine
gives each running stream `--engine-tokens-per-s / capacity` tokens a second on a fixed schedule, in chunks of
`stream_interval` (an H100 runs gpt-oss-20b at about 11,557 output tokens/s; the default engine rate is a
little above that, so that what is measured is the serving path, not the stand-in engine).

Measured per stream count:
Streams start spread over one chunk interval (as requests arrive in service), not all in one instant.
Every request has the same length, so all streams also turn over (a request ends, the stream's next
one starts) within one chunk interval: at 256 streams, 256 requests start in 0.41 s, 20 times the mean
arrival rate of that load. That is the path's worst moment and where its inter-token tail comes from
(docs/serving-path.md); it is measured as is.
- `tokens_per_s`: output tokens delivered (the usage each stream reports) over the wall time from the
  first request sent to the last stream finished.
- `added_ttft_p50_ms`: time to the first content event minus when the engine produced it
  (`stream_interval / per-stream rate` after the request started).
- `added_itl_p99_ms`: inter-token latency added by the path: for consecutive chunks of a stream, the
  client-observed gap minus the engine's gap (`stream_interval / per-stream rate`); events of one engine
  chunk (a channel change splits one chunk in two) count as one.
- `cpu_s_per_1k_tokens`: CPU seconds of tritonserver, its model process and the gateway per 1,000
  tokens delivered (the load generator's own CPU is not counted).
Then `--overload` clients at once against the same capacity (plan batch size running + as many queued):
how many were accepted (200 and a complete stream), refused with 429 (each with Retry-After), failed
with 5xx, and the gateway's peak memory. With `--json` the last line is one JSON object. Nothing is
asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptoss_runtime.checkpoint import make_tiny_checkpoint
from gptoss_runtime.plan import EngineSettings, KvBudget, ServingPlan
from gptoss_runtime.triton_model.scripted import ENDLESS_TRIGGER

H100_GPT_OSS_20B_TOKENS_PER_S = 11_557  # TensorRT-LLM perf overview, 1k/1k, max load, per GPU
DEFAULT_ENGINE_TOKENS_PER_S = 12_500
STREAM_INTERVAL = 20  # NVIDIA's gpt-oss recipes
READY_TIMEOUT_S = 90.0
PHASE_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 40.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def runtime(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gptoss_runtime.cli import main; main()", *args]


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
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
    raise SystemExit(f"{url} not ready after {READY_TIMEOUT_S:.0f} s")


def bench_plan(capacity: int, max_seq_len: int = 32768) -> ServingPlan:
    return ServingPlan(
        model="gpt-oss-20b",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpus_per_replica=1,
        engine=EngineSettings(
            tensor_parallel_size=1,
            moe_expert_parallel_size=1,
            moe_backend="TRITON",
            attention_data_parallel=False,
            max_seq_len=max_seq_len,
            max_batch_size=capacity,
            max_num_tokens=16384,
            kv_cache_free_memory_fraction=0.9,
            kv_cache_dtype="auto",
            cuda_graph_batch_sizes=(1,),
            enable_chunked_prefill=True,
            stream_interval=STREAM_INTERVAL,
        ),
        kv_budget=KvBudget(
            gpu_memory_gib=80,
            weights_gib=13,
            activation_headroom_gib=5,
            kv_cache_gib=60,
            kv_bytes_per_token=49152,
            kv_cache_tokens=1_300_000,
            max_concurrent_sequences=40,
        ),
    )


# --- processes ---------------------------------------------------------------------------------------


@dataclass
class Servers:
    url: str
    server: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    repository: Path

    def pids(self) -> dict[str, list[int]]:
        stubs = [pid for pid in _child_pids(self.server.pid)]
        return {"model": [self.server.pid, *stubs], "gateway": [self.gateway.pid]}

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for group in self.pids().values() for pid in group)

    def peak_rss_mb(self, group: str) -> float:
        return sum(_status_kib(pid, "VmHWM") for pid in self.pids()[group]) / 1024


def _child_pids(parent: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{parent}/task").glob("*/children"):
        children.extend(int(pid) for pid in task.read_text().split())
    return children


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@contextmanager
def servers(work: Path, weights: Path, plan: ServingPlan, per_stream_rate: float) -> Iterator[Servers]:
    plan_file = work / "plan.json"
    plan_file.write_text(plan.to_json())
    http, grpc, metrics, port = free_port(), free_port(), free_port(), free_port()
    repository = work / "repository"
    log = (work / "servers.log").open("ab")
    server = subprocess.Popen(
        runtime(
            "serve",
            f"--weights={weights}",
            "--engine=scripted",
            f"--plan={plan_file}",
            "--triton-address=127.0.0.1",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            f"--model-repository={repository}",
            "--exit-timeout=10",
            f"--engine-option=scripted_tokens_per_s={per_stream_rate}",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gateway = subprocess.Popen(
        runtime(
            "gateway",
            f"--triton-grpc=127.0.0.1:{grpc}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--weights={weights}",
            f"--plan={plan_file}",
            "--drain-timeout=5",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{http}/v2/models/gpt_oss/ready", server)
        wait_ready(f"http://127.0.0.1:{port}/readyz", gateway)
        yield Servers(f"http://127.0.0.1:{port}", server, gateway, repository)
    finally:
        for process in (gateway, server):
            process.send_signal(signal.SIGTERM)
        for process in (gateway, server):
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


# --- clients -----------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    status: int
    started: float
    events: list[float] = field(default_factory=list)
    tokens: int = 0
    complete: bool = False
    retry_after: str | None = None


class Connection:
    """One keep-alive HTTP/1.1 connection to the gateway, for one client's requests one after another.

    A plain asyncio stream and a request written in one piece, not aiohttp's client: on 2 cores shared
    with the path it measures, the load generator's own CPU at the moment all streams turn over
    (aiohttp: about 0.6 ms per request) delayed the servers and its own reading of the events."""

    def __init__(self, url: str) -> None:
        address = urllib.parse.urlsplit(url)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> asyncio.StreamReader:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        self.writer.write(head + body)
        return self.reader

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def chat_request(host: str, tokens: int) -> tuple[bytes, bytes]:
    body = json.dumps(
        {
            "model": "gpt-oss-20b",
            "messages": [{"role": "user", "content": ENDLESS_TRIGGER}],
            "max_tokens": tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


async def one_stream(connection: Connection, request: tuple[bytes, bytes]) -> StreamResult:
    result = StreamResult(0, time.monotonic())
    reader = await connection.request(*request)
    result.status = int((await reader.readline()).split()[1])
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    retry_after = headers.get(b"retry-after")
    result.retry_after = retry_after.decode() if retry_after is not None else None
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        await read_chunked_events(reader, result)
    else:
        await reader.readexactly(int(headers.get(b"content-length", b"0")))
    if headers.get(b"connection", b"").lower() == b"close":
        connection.close()
    return result


async def read_chunked_events(reader: asyncio.StreamReader, result: StreamResult) -> None:
    """The SSE body as the gateway sends it (chunked, one chunk per write), event lines as they arrive."""
    pending = b""
    while size := int((await reader.readline()).split(b";")[0], 16):
        lines = (pending + (await reader.readexactly(size + 2))[:-2]).split(b"\n")
        pending = lines.pop()  # an incomplete line waits for the next chunk
        for line in lines:
            read_event(line, result)
    await reader.readline()  # the CRLF after the last (empty) chunk


def read_event(line: bytes, result: StreamResult) -> None:
    if not line.startswith(b"data: "):
        return
    payload = line[6:].strip()
    if payload == b"[DONE]":
        result.complete = True
        return
    chunk = json.loads(payload)
    if chunk.get("usage"):
        result.tokens = int(chunk["usage"]["completion_tokens"])
    choices = chunk.get("choices") or []
    if choices and any(value for key, value in choices[0].get("delta", {}).items() if key != "role"):
        result.events.append(time.monotonic())


async def run_clients(
    url: str, streams: int, requests_per_stream: int, tokens: int, spread_s: float = 0.0
) -> tuple[list[StreamResult], float]:
    request = chat_request(urllib.parse.urlsplit(url).netloc, tokens)
    # What exists now lives through the phase: kept out of the collector's full scans, which would
    # stall the load generator's reading of every stream at once.
    gc.collect()
    gc.freeze()

    async def client(delay_s: float) -> list[StreamResult]:
        await asyncio.sleep(delay_s)
        connection = Connection(url)
        try:
            return [await one_stream(connection, request) for _ in range(requests_per_stream)]
        finally:
            connection.close()

    started = time.monotonic()
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        delays = (index * spread_s / streams for index in range(streams))
        per_client = await asyncio.gather(*(client(delay) for delay in delays), return_exceptions=True)
    wall = time.monotonic() - started
    results: list[StreamResult] = []
    for outcome in per_client:
        results.extend(outcome if isinstance(outcome, list) else [StreamResult(599, started)])
    return results, wall


# --- figures -----------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def added_latencies(results: list[StreamResult], chunk_s: float) -> tuple[list[float], list[float]]:
    """(added TTFT, added inter-chunk latency) in seconds, against the engine's schedule."""
    ttft: list[float] = []
    itl: list[float] = []
    for result in results:
        if result.status != 200 or not result.events:
            continue
        ttft.append(result.events[0] - result.started - chunk_s)
        bursts = [result.events[0]]
        for moment in result.events[1:]:
            if moment - bursts[-1] >= chunk_s / 4:  # else: the same engine chunk, split by a channel change
                bursts.append(moment)
        itl.extend(max(0.0, later - earlier - chunk_s) for earlier, later in itertools.pairwise(bursts))
    return ttft, itl


def measure(work: Path, weights: Path, args: argparse.Namespace, streams: int) -> dict[str, Any]:
    per_stream_rate = args.engine_tokens_per_s / args.capacity
    chunk_s = STREAM_INTERVAL / per_stream_rate
    with servers(work, weights, bench_plan(args.capacity), per_stream_rate) as running:
        # Warm-up: as many streams at once as the run has, so that the gateway's pool holds a gRPC call
        # to Triton for each (as in steady service; calls idle for 2 s close). Warmed with 8 only, the
        # run's first chunks waited behind some 250 call set-ups (about 1.5 ms of gateway CPU each).
        asyncio.run(run_clients(running.url, streams, 1, 2 * STREAM_INTERVAL))
        cpu_before = running.cpu_seconds()
        # Streams start spread over one chunk interval, as requests arrive in service: started all in one
        # instant, every stream's chunks would fall on the same engine step, which a continuously
        # batching engine (each request counting its own stream_interval) does not do.
        results, wall = asyncio.run(run_clients(running.url, streams, args.requests_per_stream, args.tokens, chunk_s))
        cpu = running.cpu_seconds() - cpu_before
        memory = {group: running.peak_rss_mb(group) for group in ("gateway", "model")}
    tokens = sum(result.tokens for result in results if result.complete)
    ttft, itl = added_latencies(results, chunk_s)
    return {
        "streams": streams,
        "tokens_per_s": round(tokens / wall, 1),
        "added_ttft_p50_ms": round(percentile(ttft, 0.50) * 1000, 2),
        "added_itl_p99_ms": round(percentile(itl, 0.99) * 1000, 2),
        "cpu_s_per_1k_tokens": round(cpu / max(tokens, 1) * 1000, 4),
        "_incomplete": sum(1 for result in results if not result.complete),
        "_gateway_rss_mb": round(memory["gateway"], 1),
        "_model_rss_mb": round(memory["model"], 1),
        "_added_itl_p50_ms": round(percentile(itl, 0.50) * 1000, 2),
    }


def overload(work: Path, weights: Path, args: argparse.Namespace) -> dict[str, Any]:
    per_stream_rate = args.engine_tokens_per_s / args.capacity
    with servers(work, weights, bench_plan(args.capacity), per_stream_rate) as running:
        results, _ = asyncio.run(run_clients(running.url, args.overload, 1, args.tokens))
        gateway_rss = running.peak_rss_mb("gateway")
    refused = [result for result in results if result.status == 429]
    return {
        "offered": args.overload,
        "accepted": sum(1 for result in results if result.status == 200 and result.complete),
        "rejected_429": len(refused),
        "errors_5xx": sum(1 for result in results if result.status >= 500),
        "max_rss_mb": round(gateway_rss, 1),
        "_429_without_retry_after": sum(1 for result in refused if not result.retry_after),
        "_incomplete_200": sum(1 for result in results if result.status == 200 and not result.complete),
    }


def public(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in figures.items() if not key.startswith("_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 256], help="concurrent streams per run")
    parser.add_argument("--overload", type=int, default=1024, help="clients at once for the overload run (0: skip)")
    parser.add_argument("--capacity", type=int, default=256, help="the plan's batch size (also queued)")
    parser.add_argument("--engine-tokens-per-s", type=float, default=DEFAULT_ENGINE_TOKENS_PER_S)
    parser.add_argument("--tokens", type=int, default=400, help="output tokens per request")
    parser.add_argument("--requests-per-stream", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,024 clients need more sockets than 1,024
    with tempfile.TemporaryDirectory(prefix="bench-serving-load-") as tmp:
        work = Path(tmp)
        weights = make_tiny_checkpoint(work / "weights")
        results = []
        for streams in args.streams:
            figures = measure(work, weights, args, streams)
            print(f"streams={streams}: " + ", ".join(f"{key.lstrip('_')}={value}" for key, value in figures.items()))
            results.append(public(figures))
        overloaded: dict[str, Any] = {}
        if args.overload:
            overloaded = overload(work, weights, args)
            print("overload: " + ", ".join(f"{key.lstrip('_')}={value}" for key, value in overloaded.items()))
    print(
        f"engine: {args.engine_tokens_per_s:.0f} tok/s at {args.capacity} streams "
        f"(H100 gpt-oss-20b: {H100_GPT_OSS_20B_TOKENS_PER_S}), stream_interval {STREAM_INTERVAL}, "
        f"{os.cpu_count()} CPUs"
    )
    if args.json:
        print(json.dumps({"results": results, "overload": public(overloaded)}))


if __name__ == "__main__":
    main()
