"""Clients for the serving tests: gRPC streaming to the `gpt_oss` model, metrics scraping."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpc_aio
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import InferInput


@dataclass(frozen=True)
class Response:
    text: str
    channel: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def infer_inputs(**values: Any) -> list[InferInput]:
    tensors = []
    for name, value in values.items():
        if isinstance(value, str):
            array = np.array([value.encode()], dtype=np.object_)
            tensor = InferInput(name, [1], "BYTES")
        elif isinstance(value, list):
            array = np.array([item.encode() for item in value], dtype=np.object_)
            tensor = InferInput(name, [len(value)], "BYTES")
        elif isinstance(value, bool):
            array = np.array([value], dtype=np.bool_)
            tensor = InferInput(name, [1], "BOOL")
        elif isinstance(value, float):
            array = np.array([value], dtype=np.float32)
            tensor = InferInput(name, [1], "FP32")
        elif name == "seed":
            array = np.array([value], dtype=np.int64)
            tensor = InferInput(name, [1], "INT64")
        else:
            array = np.array([value], dtype=np.int32)
            tensor = InferInput(name, [1], "INT32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def chat(content: str) -> str:
    return json.dumps([{"role": "user", "content": content}])


def _decode(result: Any) -> Response:
    def text(name: str) -> str:
        return bytes(result.as_numpy(name)[0]).decode()

    return Response(
        text=text("text_output"),
        channel=text("channel"),
        prompt_tokens=int(result.as_numpy("prompt_tokens")[0]),
        completion_tokens=int(result.as_numpy("completion_tokens")[0]),
        finish_reason=text("finish_reason"),
    )


class ModelError(Exception):
    pass


async def stream(url: str, **inputs: Any) -> AsyncIterator[Response]:
    """Responses of one request over a gRPC stream; closing the iterator early cancels the stream."""
    client = grpc_aio.InferenceServerClient(url=url)
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "gpt_oss", "inputs": infer_inputs(**inputs), "request_id": "test"}
        await finished.wait()

    call = client.stream_infer(requests())
    completed = False
    try:
        async for result, error in call:
            if error is not None:
                completed = True  # the model refused the request: its stream is over
                raise ModelError(str(error))
            response = _decode(result)
            yield response
            if response.finish_reason:
                completed = True
                return
    finally:
        finished.set()  # half-close: Triton ends the stream once the request is done
        if completed:
            # Let Triton close the stream before closing the channel: closing the channel would cancel
            # the finished call, and a gRPC cancel that arrives after the final response leaves Triton
            # 2.51 unable to unload the model at shutdown.
            await asyncio.wait_for(_drain(call), timeout=10)
        else:
            call.cancel()
        await client.close()


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def generate(url: str, **inputs: Any) -> list[Response]:
    return [response async for response in stream(url, **inputs)]


def scrape(metrics_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the metrics port, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise AssertionError(f"{name}{labels} is not exported; have {sorted({n for n, _ in samples})}")
    return samples[key]
