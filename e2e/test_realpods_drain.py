"""Real pods: the serving path's edges. Triton's own HTTP and gRPC ports stay inside the pod (only the gateway
and the metrics port answer from outside), and a pod deleted in the middle of a stream finishes that stream.

The operator runs in-cluster from its image, installed by the chart, with the CPU stand-in (the reference
engine instead of TensorRT-LLM) as in e2e/test_realpods.py, in namespaces of its own so that both modules
can run in one session. This machine is the real node: the pods' IPs and the Services' ClusterIPs are
reachable from here, as from any other pod on the node.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import realpods
from conftest import Kubectl, wait_until
from test_realpods import (
    RealCluster,
    installed,
    sample_20b,
    server_pods,
    service_url,
    wait_ready,
)

from gptoss_runtime import contract

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

NAMESPACE = "e2e-drain"
OPERATOR_NAMESPACE = "e2e-drain-operator"
RELEASE = "gptoss-e2e-drain"
NAME = "drained"
# The streamed answer lasts about this long: long enough to be mid-way when the pod is deleted, short enough
# to end inside the gateway's drain timeout (20 s) on a busy machine.
STREAM_SECONDS = 8.0
DELETE_AFTER_SECONDS = 1.5
MAX_STREAM_TOKENS = 8000  # under the sample's maxSeqLen (32768), and fewer characters than the minLength below
# The tiny random checkpoint soon samples a stop token (a few hundred tokens); a JSON string longer than any
# stream here, enforced by the engine's token masks, keeps the answer going until max_tokens.
LONG_ANSWER_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "story",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"story": {"type": "string", "minLength": 50000}},
            "required": ["story"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def real(kubeconfig: Path, kubectl: Kubectl) -> Iterator[RealCluster]:
    where = realpods.Installation(NAMESPACE, OPERATOR_NAMESPACE, RELEASE)
    yield from installed(kubeconfig, kubectl, where, crd_field_manager="gptoss-e2e-drain")


@pytest.fixture(scope="module")
def served(real: RealCluster) -> str:
    real.ns.apply(sample_20b(NAME))
    wait_ready(real, NAME)
    return NAME


# ------------------------------------------------------------------------------------------------ helpers
def connect_outcome(host: str, port: int) -> str:
    """`open`, `refused`, or the error's name, for one TCP connection attempt."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return "refused"
    except OSError as error:
        return type(error).__name__
    return "open"


def http_status(url: str) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@dataclass
class RecordedStream:
    """A streamed chat completion read on a thread, each chunk timed."""

    chunk_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int | None = None
    error: BaseException | None = None
    ended_at: float | None = None


def stream_in_background(url: str, model: str, max_tokens: int) -> tuple[RecordedStream, threading.Thread]:
    from openai import OpenAI

    record = RecordedStream()
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

    def read() -> None:
        try:
            stream = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Tell a very long story."}],
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                response_format=LONG_ANSWER_FORMAT,  # type: ignore[arg-type]
            )
            for chunk in stream:
                record.chunk_times.append(time.monotonic())
                if chunk.choices and chunk.choices[0].finish_reason:
                    record.finish_reason = chunk.choices[0].finish_reason
                if chunk.usage is not None:
                    record.completion_tokens = chunk.usage.completion_tokens
        except BaseException as error:
            record.error = error
        finally:
            record.ended_at = time.monotonic()

    thread = threading.Thread(target=read, name="drain-stream", daemon=True)
    thread.start()
    return record, thread


def streamed_for(record: RecordedStream) -> float:
    times = list(record.chunk_times)
    return times[-1] - times[0] if len(times) > 1 else 0.0


def tokens_for(url: str, model: str, seconds: float) -> int:
    """How many tokens the stand-in engine streams in about `seconds` here (the machine's speed varies)."""
    probe, thread = stream_in_background(url, model, 200)
    thread.join(timeout=120)
    assert probe.error is None and probe.completion_tokens, probe
    rate = probe.completion_tokens / max(streamed_for(probe), 0.05)
    return max(200, min(MAX_STREAM_TOKENS, int(rate * seconds)))


def endpoint_ready(real: RealCluster, pod_name: str) -> bool | None:
    """The EndpointSlice's `ready` for a pod of the Service (None once the pod is no longer listed)."""
    slices = real.ns.json("get", "endpointslices", "-l", f"kubernetes.io/service-name={NAME}")["items"]
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("targetRef") or {}).get("name") == pod_name:
                return bool((endpoint.get("conditions") or {}).get("ready"))
    return None


# ------------------------------------------------------------------------------------------------ tests
def test_only_the_gateway_and_metrics_answer_from_outside_the_pod(real: RealCluster, served: str) -> None:
    (pod,) = server_pods(real.ns, served)
    ip = pod["status"]["podIP"]
    # Triton's HTTP and gRPC listen on the pod's loopback only: the pod IP refuses them.
    assert connect_outcome(ip, contract.HTTP_PORT) == "refused"
    assert connect_outcome(ip, contract.GRPC_PORT) == "refused"
    # The gateway (which reaches Triton over loopback) answers, and so does Triton's metrics port for scraping.
    assert http_status(f"http://{ip}:{contract.OPENAI_PORT}/readyz") == 200
    assert http_status(f"http://{ip}:{contract.OPENAI_PORT}/v1/models") == 200
    assert http_status(f"http://{ip}:{contract.METRICS_PORT}/metrics") == 200
    ports = {port["port"] for port in real.ns.json("get", "service", served)["spec"]["ports"]}
    assert ports == {contract.OPENAI_PORT, contract.METRICS_PORT}


def test_a_pod_deleted_mid_stream_fails_readiness_first_and_finishes_the_stream(real: RealCluster, served: str) -> None:
    (pod,) = server_pods(real.ns, served)
    pod_name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    url = service_url(real, served)
    model = realpods.served_model(url)
    max_tokens = tokens_for(url, model, STREAM_SECONDS)

    record, thread = stream_in_background(url, model, max_tokens)
    # Let it run a while first, so that the deletion lands mid-stream rather than at its start.
    wait_until(
        lambda: streamed_for(record) >= DELETE_AFTER_SECONDS or record.ended_at is not None,
        timeout_s=60,
        interval_s=0.1,
        what="the stream under way",
    )
    assert record.ended_at is None, f"the stream ended before the pod was deleted: {record}"
    real.ns("delete", "pod", pod_name, "--wait=false")
    deleted_at = time.monotonic()

    # Readiness fails first: the gateway's /readyz and the Service's endpoint, while the stream goes on.
    wait_until(
        lambda: http_status(f"http://{ip}:{contract.OPENAI_PORT}/readyz") == 503,
        timeout_s=30,
        interval_s=0.2,
        what="the deleted pod's gateway to fail /readyz",
    )
    unready_at = time.monotonic()
    wait_until(
        lambda: not endpoint_ready(real, pod_name),
        timeout_s=30,
        interval_s=0.2,
        what="the Service's endpoint of the deleted pod not ready",
    )
    assert record.ended_at is None or record.ended_at > unready_at, "the stream ended before readiness failed"

    thread.join(timeout=120)
    assert not thread.is_alive(), "the stream did not end"
    assert record.error is None, f"the stream broke while its pod drained: {record.error!r}"
    assert record.finish_reason == "length", record  # the whole answer: max_tokens of it
    assert record.completion_tokens == max_tokens, record
    after_delete = [t for t in record.chunk_times if t > deleted_at]
    assert len(after_delete) > 1, f"no tokens arrived after the deletion: {len(record.chunk_times)} chunks in all"
    assert record.ended_at is not None
    print(
        f"drain: {max_tokens} tokens streamed in {record.ended_at - record.chunk_times[0]:.1f} s; pod deleted after "
        f"{deleted_at - record.chunk_times[0]:.1f} s, /readyz 503 {unready_at - deleted_at:.1f} s later; "
        f"{len(after_delete)} of {len(record.chunk_times)} chunks after the deletion"
    )

    # The pod goes away and a replacement serves.
    wait_until(
        lambda: pod_name not in {p["metadata"]["name"] for p in real.ns.json("get", "pods")["items"]},
        timeout_s=120,
        what="the deleted pod gone",
    )
    wait_ready(real, served)
