"""The `gpt_oss` model's own metrics, exported on Triton's metrics port through `pb_utils.MetricFamily`.

Names come from `gptoss_runtime.contract`; every series carries the label `model` (the deployment's
model name), and `gptoss_requests_total` also `outcome` (success, error, cancelled). Time to first token
is a real histogram: the Python backend of Triton 2.51 supports `MetricFamily.HISTOGRAM` (buckets
`contract.TIME_TO_FIRST_TOKEN_BUCKETS`).

Each update of a Triton metric is a blocking round trip from the stub to the server (about 0.5 ms, far
more on a loaded machine). Made on the engine's event loop, the ten or so per request (gauges at start
and end, time to first token, outcome, counters) stalled every stream: 256 requests ending together
blocked the loop for over a second. So every method but `flush()` only records in memory, under a lock
(the engine's loop records, another thread flushes); `flush()` pushes it all to Triton and runs on the
model's metrics thread every half second (`triton_model.backend`), never on the engine's loop.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Final, Protocol

from gptoss_runtime import contract
from gptoss_runtime.engine.base import EngineStats

OUTCOME_SUCCESS: Final = "success"
OUTCOME_ERROR: Final = "error"
OUTCOME_CANCELLED: Final = "cancelled"
OUTCOMES: Final = (OUTCOME_SUCCESS, OUTCOME_ERROR, OUTCOME_CANCELLED)


class MetricsSink(Protocol):
    """What the generation service reports; `TritonModelMetrics` or `RecordingMetrics` (tests)."""

    def prompt_tokens(self, count: int) -> None: ...

    def generated_tokens(self, count: int) -> None: ...

    def time_to_first_token(self, seconds: float) -> None: ...

    def request_finished(self, outcome: str) -> None: ...

    def refresh(self, stats: EngineStats) -> None: ...

    def flush(self) -> None: ...


class RecordingMetrics:
    """Keeps everything in memory (used where no Triton is running)."""

    def __init__(self) -> None:
        self.prompt_tokens_total = 0
        self.generated_tokens_total = 0
        self.first_token_seconds: list[float] = []
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.last_stats: EngineStats | None = None

    def prompt_tokens(self, count: int) -> None:
        self.prompt_tokens_total += count

    def generated_tokens(self, count: int) -> None:
        self.generated_tokens_total += count

    def time_to_first_token(self, seconds: float) -> None:
        self.first_token_seconds.append(seconds)

    def request_finished(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def refresh(self, stats: EngineStats) -> None:
        self.last_stats = stats

    def flush(self) -> None:
        return


class TritonModelMetrics:
    """Metric families registered with Triton through the Python backend's `pb_utils` module."""

    def __init__(self, pb_utils: Any, model_name: str) -> None:
        kinds = pb_utils.MetricFamily
        self._families: dict[str, Any] = {}
        self._metrics: dict[str, Any] = {}
        gauges = (
            (contract.METRIC_REQUESTS_RUNNING, "Sequences being generated now."),
            (contract.METRIC_REQUESTS_WAITING, "Requests admitted but not yet scheduled."),
            (contract.METRIC_KV_CACHE_UTILIZATION, "Share of the KV cache in use (0..1)."),
        )
        counters = (
            (contract.METRIC_GENERATED_TOKENS, "Tokens generated."),
            (contract.METRIC_PROMPT_TOKENS, "Prompt tokens processed."),
            (contract.METRIC_REQUESTS, "Requests finished, by outcome."),
        )
        for name, description in gauges:
            self._families[name] = kinds(name=name, description=description, kind=kinds.GAUGE)
        for name, description in counters:
            self._families[name] = kinds(name=name, description=description, kind=kinds.COUNTER)
        self._families[contract.METRIC_TIME_TO_FIRST_TOKEN] = kinds(
            name=contract.METRIC_TIME_TO_FIRST_TOKEN,
            description="Seconds from admission to the first generated token.",
            kind=kinds.HISTOGRAM,
        )
        labels = {"model": model_name}
        for name in (*(g for g, _ in gauges), contract.METRIC_GENERATED_TOKENS, contract.METRIC_PROMPT_TOKENS):
            self._metrics[name] = self._families[name].Metric(labels=labels)
        self._metrics[contract.METRIC_TIME_TO_FIRST_TOKEN] = self._families[contract.METRIC_TIME_TO_FIRST_TOKEN].Metric(
            labels=labels, buckets=list(contract.TIME_TO_FIRST_TOKEN_BUCKETS)
        )
        for outcome in OUTCOMES:
            self._metrics[f"{contract.METRIC_REQUESTS}/{outcome}"] = self._families[contract.METRIC_REQUESTS].Metric(
                labels={**labels, "outcome": outcome}
            )
        self._lock = threading.Lock()
        self._pending_prompt = 0
        self._pending_generated = 0
        self._pending_first_token: list[float] = []
        self._pending_outcomes: Counter[str] = Counter()
        self._stats: EngineStats | None = None
        self._pushed_stats: EngineStats | None = None

    def prompt_tokens(self, count: int) -> None:
        with self._lock:
            self._pending_prompt += count

    def generated_tokens(self, count: int) -> None:
        with self._lock:
            self._pending_generated += count

    def time_to_first_token(self, seconds: float) -> None:
        with self._lock:
            self._pending_first_token.append(seconds)

    def request_finished(self, outcome: str) -> None:
        with self._lock:
            self._pending_outcomes[outcome] += 1

    def refresh(self, stats: EngineStats) -> None:
        self._stats = stats  # one assignment: atomic under the GIL

    def flush(self) -> None:
        """Push what was recorded since the last flush (blocking round trips: not on the engine's loop)."""
        with self._lock:
            prompt, self._pending_prompt = self._pending_prompt, 0
            generated, self._pending_generated = self._pending_generated, 0
            first_tokens, self._pending_first_token = self._pending_first_token, []
            outcomes, self._pending_outcomes = self._pending_outcomes, Counter()
        if prompt:
            self._metrics[contract.METRIC_PROMPT_TOKENS].increment(prompt)
        if generated:
            self._metrics[contract.METRIC_GENERATED_TOKENS].increment(generated)
        for seconds in first_tokens:
            self._metrics[contract.METRIC_TIME_TO_FIRST_TOKEN].observe(seconds)
        for outcome, count in outcomes.items():
            self._metrics[f"{contract.METRIC_REQUESTS}/{outcome}"].increment(count)
        stats = self._stats
        if stats is not None and stats != self._pushed_stats:  # gauges: only when they changed
            self._metrics[contract.METRIC_REQUESTS_RUNNING].set(stats.requests_running)
            self._metrics[contract.METRIC_REQUESTS_WAITING].set(stats.requests_waiting)
            self._metrics[contract.METRIC_KV_CACHE_UTILIZATION].set(stats.kv_cache_utilization)
            self._pushed_stats = stats

    def close(self) -> None:
        """Metrics must go before their families (the backend refuses the other order)."""
        self._metrics.clear()
        self._families.clear()
