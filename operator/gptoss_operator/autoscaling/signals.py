"""What one replica feels, read from the Prometheus text on its Triton metrics port (pure).

The runtime's `gpt_oss` model exports the gauges and the histogram named in `gptoss_runtime.contract`
(METRIC_*). A metric that is absent stays `None` here, never zero: the policy must be able to tell "idle"
from "unknown" and refuses to decide on unknown data.

Time to first token is a histogram, so a single scrape only gives the distribution since the pod started.
The autoscaler needs the recent distribution: `replica_signals` subtracts the previous scrape's buckets from
the current ones (the observations made between the two scrapes) and the policy merges those windows across
replicas before taking a quantile, as Prometheus' `histogram_quantile(sum(rate(...)))` would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gptoss_runtime.contract import (
    METRIC_KV_CACHE_UTILIZATION,
    METRIC_REQUESTS_RUNNING,
    METRIC_REQUESTS_WAITING,
    METRIC_TIME_TO_FIRST_TOKEN,
)

DEFAULT_TTFT_QUANTILE = 0.9


class MetricsParseError(ValueError):
    """The metrics text is not valid Prometheus text exposition."""


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram: counts of observations <= each upper bound (the last bound is +Inf)."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    total: float
    sum: float

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts):
            raise ValueError("Histogram: bounds and counts must have the same length")
        if not self.bounds or not math.isinf(self.bounds[-1]):
            raise ValueError("Histogram: the last bound must be +Inf")

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> Histogram:
        """A histogram with no observations over the given finite bounds (+Inf is appended)."""
        all_bounds = (*sorted(bounds), math.inf)
        return cls(bounds=all_bounds, counts=(0.0,) * len(all_bounds), total=0.0, sum=0.0)

    def since(self, earlier: Histogram | None) -> Histogram | None:
        """The observations made after `earlier` (None if the two cannot be compared).

        A count that went down means the server restarted (counters reset): then everything in `self`
        happened since, as Prometheus' `rate()` assumes.
        """
        if earlier is None or earlier.bounds != self.bounds:
            return None
        if self.total < earlier.total or any(c < e for c, e in zip(self.counts, earlier.counts, strict=True)):
            return self
        return Histogram(
            bounds=self.bounds,
            counts=tuple(c - e for c, e in zip(self.counts, earlier.counts, strict=True)),
            total=self.total - earlier.total,
            sum=self.sum - earlier.sum,
        )

    def plus(self, other: Histogram) -> Histogram:
        """Both histograms' observations together (they must share bounds)."""
        if other.bounds != self.bounds:
            raise ValueError("Histogram.plus: bucket bounds differ; the replicas run different runtime versions")
        return Histogram(
            bounds=self.bounds,
            counts=tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            total=self.total + other.total,
            sum=self.sum + other.sum,
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile estimated like Prometheus' `histogram_quantile` (None without observations).

        Linear interpolation inside the bucket that holds the rank; a rank in the +Inf bucket returns the
        highest finite bound (the histogram cannot say more).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile: q must lie in [0, 1], got {q}")
        observations = self.counts[-1]
        if observations <= 0:
            return None
        rank = q * observations
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound
                in_bucket = count - lower_count
                if in_bucket <= 0:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
            lower_bound, lower_count = bound, count
        return lower_bound  # unreachable for a well-formed histogram: the +Inf count is the total


@dataclass(frozen=True)
class MetricsSample:
    """One scrape of one pod, reduced to the signals the autoscaler uses (None: metric absent)."""

    requests_waiting: float | None = None
    requests_running: float | None = None
    kv_cache_utilization: float | None = None
    time_to_first_token: Histogram | None = None


@dataclass(frozen=True)
class ReplicaSignals:
    """What one replica (one pod) reports to the autoscaler.

    `started_at` is when the replica started serving (the pod's Ready condition's lastTransitionTime, in
    seconds since the epoch): the policy protects replicas younger than its grace period from being judged
    idle. `ttft_window` holds the time-to-first-token observations made between the last two scrapes: None
    when the pod does not export the histogram, an empty histogram when there is no earlier scrape yet.
    """

    pod: str
    ready: bool
    started_at: float | None = None
    requests_waiting: float | None = None
    requests_running: float | None = None
    kv_cache_utilization: float | None = None
    ttft_window: Histogram | None = None

    @property
    def time_to_first_token_seconds(self) -> float | None:
        """This replica's p90 time to first token over the last window (None without observations)."""
        if self.ttft_window is None:
            return None
        return self.ttft_window.quantile(DEFAULT_TTFT_QUANTILE)


def parse_metrics(text: str) -> MetricsSample:
    """Reduce one pod's Prometheus text to a `MetricsSample`.

    Gauges are summed over their series (one pod serves one model, so normally there is one series); KV
    cache utilization, a ratio, takes the largest series. Samples are matched by name, so a missing
    `# TYPE` line does not hide a metric. Raises `MetricsParseError` for text that is not Prometheus text.
    """
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, TypeError, IndexError) as error:
        raise MetricsParseError(f"metrics text is not Prometheus text exposition: {error}") from error
    gauges: dict[str, list[float]] = {}
    buckets: dict[float, float] = {}
    ttft_count: float | None = None
    ttft_sum: float | None = None
    for sample in samples:
        if sample.name in (METRIC_REQUESTS_WAITING, METRIC_REQUESTS_RUNNING, METRIC_KV_CACHE_UTILIZATION):
            gauges.setdefault(sample.name, []).append(float(sample.value))
        elif sample.name == f"{METRIC_TIME_TO_FIRST_TOKEN}_bucket":
            bound = _bucket_bound(sample.labels.get("le"))
            buckets[bound] = buckets.get(bound, 0.0) + float(sample.value)
        elif sample.name == f"{METRIC_TIME_TO_FIRST_TOKEN}_count":
            ttft_count = (ttft_count or 0.0) + float(sample.value)
        elif sample.name == f"{METRIC_TIME_TO_FIRST_TOKEN}_sum":
            ttft_sum = (ttft_sum or 0.0) + float(sample.value)
    return MetricsSample(
        requests_waiting=_sum_or_none(gauges.get(METRIC_REQUESTS_WAITING)),
        requests_running=_sum_or_none(gauges.get(METRIC_REQUESTS_RUNNING)),
        kv_cache_utilization=_max_or_none(gauges.get(METRIC_KV_CACHE_UTILIZATION)),
        time_to_first_token=_histogram(buckets, ttft_count, ttft_sum),
    )


def replica_signals(
    pod: str,
    *,
    ready: bool,
    started_at: float | None,
    current: MetricsSample | None,
    previous: MetricsSample | None,
) -> ReplicaSignals:
    """Combine a pod's state with its latest scrape (and the one before, for the TTFT window).

    `current` None means the scrape failed or was not attempted (a pod that is not ready): every signal
    is then None.
    """
    if current is None:
        return ReplicaSignals(pod=pod, ready=ready, started_at=started_at)
    window = None
    histogram = current.time_to_first_token
    if histogram is not None:
        # No comparable earlier scrape (first sight of this pod, or its buckets changed): an empty window,
        # so that the pod counts as exporting TTFT but adds no stale observations from its whole life.
        earlier = previous.time_to_first_token if previous is not None else None
        window = histogram.since(earlier) or Histogram.empty(histogram.bounds[:-1])
    return ReplicaSignals(
        pod=pod,
        ready=ready,
        started_at=started_at,
        requests_waiting=current.requests_waiting,
        requests_running=current.requests_running,
        kv_cache_utilization=current.kv_cache_utilization,
        ttft_window=window,
    )


def merge_windows(windows: Iterable[Histogram]) -> Histogram | None:
    """All replicas' TTFT windows as one fleet histogram (None if there are none)."""
    merged: Histogram | None = None
    for window in windows:
        merged = window if merged is None else merged.plus(window)
    return merged


def _bucket_bound(le: str | None) -> float:
    try:
        bound = float(le) if le is not None else math.nan
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        raise MetricsParseError(f"{METRIC_TIME_TO_FIRST_TOKEN}_bucket has an invalid le label: {le!r}")
    return bound


def _sum_or_none(values: list[float] | None) -> float | None:
    return None if not values else math.fsum(values)


def _max_or_none(values: list[float] | None) -> float | None:
    return None if not values else max(values)


def _histogram(buckets: dict[float, float], count: float | None, total_sum: float | None) -> Histogram | None:
    if not buckets and count is None:
        return None
    if count is None:
        count = buckets.get(math.inf, max(buckets.values()))
    buckets = dict(buckets)
    buckets.setdefault(math.inf, count)
    bounds = tuple(sorted(buckets))
    return Histogram(bounds=bounds, counts=tuple(buckets[b] for b in bounds), total=count, sum=total_sum or 0.0)
