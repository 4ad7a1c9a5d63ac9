"""The autoscaler's signals read from a real tritonserver (reference engine, tiny checkpoint) under load.

A bounded load generator keeps more streaming requests in flight than the engine's batch limit (8), so
requests run and queue; the operator's own scrape and parse code (`autoscaling.scrape`, `.signals`) reads
the pod's metrics port, and `policy.decide` turns them into decisions. No number here is hand-written:
every signal comes from Triton.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import ServerProcess, start_server
from load_generator import LoadGenerator

from gptoss_operator.api import AutoscalingSpec
from gptoss_operator.autoscaling.config import policy_config
from gptoss_operator.autoscaling.policy import DecisionHistory, Direction, PolicyConfig, decide
from gptoss_operator.autoscaling.scrape import scrape_url
from gptoss_operator.autoscaling.signals import MetricsSample, ReplicaSignals, replica_signals

pytestmark = [pytest.mark.triton, pytest.mark.slow]

REFERENCE_BATCH_LIMIT = 8  # the reference engine's max batch without a plan (runtime/README.md)
CONCURRENCY = 12  # more than the batch limit: 8 run, the rest wait
LONG_AGO = 0.0  # replicas ready since the epoch: past any startup grace
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("autoscaling-signals"), tiny_weights, "reference")
    yield process
    process.stop()


def scrape(server: ServerProcess) -> MetricsSample:
    async def once() -> MetricsSample:
        async with aiohttp.ClientSession() as session:
            return await scrape_url(session, server.metrics_url, timeout_seconds=5)

    return asyncio.run(once())


def wait_for_sample(server: ServerProcess, what: str, predicate: object) -> MetricsSample:
    """Scrape until `predicate(sample)` holds (the gauges refresh every 0.5 s) or fail naming `what`."""
    assert callable(predicate)
    deadline = time.monotonic() + DEADLINE_S
    seen = scrape(server)
    while not predicate(seen):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE_S:g} s waiting for {what}; last sample: {seen}")
        time.sleep(0.25)
        seen = scrape(server)
    return seen


def fleet(current: MetricsSample, previous: MetricsSample | None, replicas: int) -> list[ReplicaSignals]:
    """`replicas` ready replicas that all report this server (a fleet of identical replicas)."""
    return [
        replica_signals(f"pod-{i}", ready=True, started_at=LONG_AGO, current=current, previous=previous)
        for i in range(replicas)
    ]


def config(scale_down_window_s: int, ttft_target_s: float | None = None) -> PolicyConfig:
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 4,
            "targets": {"timeToFirstTokenSeconds": ttft_target_s},
            "scaleDown": {"stabilizationWindowSeconds": scale_down_window_s, "maxStepReplicas": 1},
        }
    )
    return policy_config(spec, max_batch_size=REFERENCE_BATCH_LIMIT)


def ttft_observations(sample: MetricsSample) -> float:
    return sample.time_to_first_token.total if sample.time_to_first_token is not None else 0.0


def test_signals_move_with_load_and_drive_decisions(server: ServerProcess) -> None:
    idle = scrape(server)
    assert (idle.requests_running, idle.requests_waiting) == (0.0, 0.0)
    assert idle.kv_cache_utilization == 0.0
    assert idle.time_to_first_token is not None  # exported (empty) before any request

    with LoadGenerator(server.grpc_url, concurrency=CONCURRENCY, max_tokens=128) as load:
        start = wait_for_sample(
            server,
            "the batch to fill and requests to queue",
            lambda s: s.requests_running == REFERENCE_BATCH_LIMIT and (s.requests_waiting or 0) >= 1,
        )
        loaded = wait_for_sample(
            server,
            "20 first tokens since the load started",
            lambda s: ttft_observations(s) - ttft_observations(start) >= 20 and (s.requests_waiting or 0) >= 1,
        )
    assert load.stats.errors == []
    assert loaded.kv_cache_utilization is not None and loaded.kv_cache_utilization > 0.0
    window = fleet(loaded, start, 1)[0]
    assert window.time_to_first_token_seconds is not None and window.time_to_first_token_seconds > 0.0

    history = DecisionHistory()
    under_load = decide(100.0, 2, fleet(loaded, start, 2), history, config(scale_down_window_s=300, ttft_target_s=1.0))
    assert under_load.direction == Direction.UP, under_load.reason
    assert under_load.desired > 2
    assert under_load.signals["requestsRunningPerReplica"] == REFERENCE_BATCH_LIMIT
    assert under_load.signals["requestsWaitingPerReplica"] >= 1
    assert "timeToFirstTokenSeconds" in under_load.signals
    history = history.record(100.0, under_load, config(scale_down_window_s=300, ttft_target_s=1.0), applied=2)

    after = wait_for_sample(
        server, "the load to drain", lambda s: (s.requests_running, s.requests_waiting) == (0.0, 0.0)
    )
    assert after.kv_cache_utilization == 0.0
    held = decide(130.0, 2, fleet(after, loaded, 2), history, config(scale_down_window_s=300))
    assert (held.direction, held.desired) == (Direction.NONE, 2), held.reason
    assert "stabilization window" in held.reason
    released = decide(130.0, 2, fleet(after, loaded, 2), DecisionHistory(), config(scale_down_window_s=0))
    assert (released.direction, released.desired) == (Direction.DOWN, 1), released.reason
