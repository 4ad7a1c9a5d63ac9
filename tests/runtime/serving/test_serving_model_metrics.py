"""`TritonModelMetrics` with a stand-in for `pb_utils`: recording never talks to Triton (each update is a
blocking round trip); `flush()` pushes everything recorded, once, and gauges only when they changed."""

from __future__ import annotations

import threading
from typing import Any

from gptoss_runtime import contract
from gptoss_runtime.engine.base import EngineStats
from gptoss_runtime.metrics import TritonModelMetrics


class StandInPbUtils:
    """Records every call a Triton metric gets (what would be a message to the server)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        outer = self

        class Metric:
            def __init__(self, family: str, labels: dict[str, str]) -> None:
                self.name = family + "".join(f"/{value}" for key, value in sorted(labels.items()) if key != "model")

            def increment(self, value: float) -> None:
                outer.calls.append(("increment", self.name, value))

            def set(self, value: float) -> None:
                outer.calls.append(("set", self.name, value))

            def observe(self, value: float) -> None:
                outer.calls.append(("observe", self.name, value))

        class MetricFamily:
            GAUGE, COUNTER, HISTOGRAM = "gauge", "counter", "histogram"

            def __init__(self, name: str, description: str, kind: str) -> None:
                self.name = name

            def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> Metric:
                return Metric(self.name, labels)

        self.MetricFamily = MetricFamily


def stats(running: int) -> EngineStats:
    return EngineStats(running, 0, 0.5, 0, 0)


def test_recording_sends_nothing_and_a_flush_sends_it_all_once() -> None:
    pb = StandInPbUtils()
    metrics = TritonModelMetrics(pb, "gpt-oss-20b")

    metrics.prompt_tokens(10)
    metrics.generated_tokens(3)
    metrics.generated_tokens(4)
    metrics.time_to_first_token(0.02)
    metrics.request_finished("success")
    metrics.request_finished("success")
    metrics.refresh(stats(2))
    assert pb.calls == []  # nothing on the engine's loop

    metrics.flush()
    assert sorted(pb.calls) == sorted(
        [
            ("increment", contract.METRIC_PROMPT_TOKENS, 10),
            ("increment", contract.METRIC_GENERATED_TOKENS, 7),
            ("observe", contract.METRIC_TIME_TO_FIRST_TOKEN, 0.02),
            ("increment", f"{contract.METRIC_REQUESTS}/success", 2),
            ("set", contract.METRIC_REQUESTS_RUNNING, 2),
            ("set", contract.METRIC_REQUESTS_WAITING, 0),
            ("set", contract.METRIC_KV_CACHE_UTILIZATION, 0.5),
        ]
    )
    pb.calls.clear()
    metrics.refresh(stats(2))
    metrics.flush()
    assert pb.calls == []  # nothing new, gauges unchanged


def test_counts_recorded_while_flushing_from_another_thread_are_not_lost() -> None:
    pb = StandInPbUtils()
    metrics = TritonModelMetrics(pb, "gpt-oss-20b")
    done = threading.Event()

    def flush_until_done() -> None:
        while not done.is_set():
            metrics.flush()

    flusher = threading.Thread(target=flush_until_done)
    flusher.start()
    for _ in range(20_000):
        metrics.generated_tokens(1)
    done.set()
    flusher.join(10)
    metrics.flush()

    pushed = sum(value for kind, name, value in pb.calls if name == contract.METRIC_GENERATED_TOKENS)
    assert pushed == 20_000
