"""Parsing a pod's Prometheus text into the autoscaler's signals."""

from __future__ import annotations

import math

import pytest

from gptoss_operator.autoscaling.signals import (
    Histogram,
    MetricsParseError,
    MetricsSample,
    ReplicaSignals,
    merge_windows,
    parse_metrics,
    replica_signals,
)
from gptoss_runtime.contract import (
    METRIC_KV_CACHE_UTILIZATION,
    METRIC_REQUESTS_RUNNING,
    METRIC_REQUESTS_WAITING,
    METRIC_TIME_TO_FIRST_TOKEN,
)


def ttft_lines(counts: dict[str, float], total_sum: float, model: str = "gpt-oss-20b") -> str:
    lines = [f"# TYPE {METRIC_TIME_TO_FIRST_TOKEN} histogram"]
    for le, count in counts.items():
        lines.append(f'{METRIC_TIME_TO_FIRST_TOKEN}_bucket{{model="{model}",le="{le}"}} {count}')
    lines.append(f'{METRIC_TIME_TO_FIRST_TOKEN}_sum{{model="{model}"}} {total_sum}')
    lines.append(f'{METRIC_TIME_TO_FIRST_TOKEN}_count{{model="{model}"}} {counts["+Inf"]}')
    return "\n".join(lines) + "\n"


def full_page(waiting: float = 3, running: float = 12, kv: float = 0.42, counts: dict[str, float] | None = None) -> str:
    counts = counts or {"0.5": 5, "1.0": 8, "2.0": 10, "+Inf": 10}
    return (
        "# HELP nv_inference_count Number of inferences\n"
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="gpt_oss",version="1"} 99\n'
        f"# TYPE {METRIC_REQUESTS_WAITING} gauge\n"
        f'{METRIC_REQUESTS_WAITING}{{model="gpt-oss-20b"}} {waiting}\n'
        f"# TYPE {METRIC_REQUESTS_RUNNING} gauge\n"
        f'{METRIC_REQUESTS_RUNNING}{{model="gpt-oss-20b"}} {running}\n'
        f"# TYPE {METRIC_KV_CACHE_UTILIZATION} gauge\n"
        f'{METRIC_KV_CACHE_UTILIZATION}{{model="gpt-oss-20b"}} {kv}\n' + ttft_lines(counts, 7.5)
    )


def test_parse_reads_every_signal() -> None:
    sample = parse_metrics(full_page())
    assert sample.requests_waiting == 3
    assert sample.requests_running == 12
    assert sample.kv_cache_utilization == pytest.approx(0.42)
    assert sample.time_to_first_token is not None
    assert sample.time_to_first_token.bounds == (0.5, 1.0, 2.0, math.inf)
    assert sample.time_to_first_token.counts == (5.0, 8.0, 10.0, 10.0)
    assert sample.time_to_first_token.total == 10
    assert sample.time_to_first_token.sum == pytest.approx(7.5)


def test_missing_metrics_are_none_not_zero() -> None:
    sample = parse_metrics('nv_inference_count{model="gpt_oss"} 5\n')
    assert sample == MetricsSample(None, None, None, None)


def test_empty_page_is_all_none() -> None:
    assert parse_metrics("") == MetricsSample()


def test_gauges_without_type_lines_are_still_found() -> None:
    sample = parse_metrics(f"{METRIC_REQUESTS_WAITING} 2\n{METRIC_REQUESTS_RUNNING} 0\n")
    assert sample.requests_waiting == 2
    assert sample.requests_running == 0  # a real zero stays zero


def test_several_series_sum_gauges_and_take_the_largest_kv_ratio() -> None:
    text = (
        f'{METRIC_REQUESTS_WAITING}{{model="a"}} 2\n{METRIC_REQUESTS_WAITING}{{model="b"}} 3\n'
        f'{METRIC_KV_CACHE_UTILIZATION}{{model="a"}} 0.2\n{METRIC_KV_CACHE_UTILIZATION}{{model="b"}} 0.7\n'
    )
    sample = parse_metrics(text)
    assert sample.requests_waiting == 5
    assert sample.kv_cache_utilization == pytest.approx(0.7)


def test_garbage_raises_a_clear_error() -> None:
    with pytest.raises(MetricsParseError, match="not Prometheus text"):
        parse_metrics("this is { not metrics\n")


def test_ttft_window_is_the_difference_between_two_scrapes() -> None:
    before = parse_metrics(full_page(counts={"0.5": 5, "1.0": 8, "2.0": 10, "+Inf": 10}))
    after = parse_metrics(full_page(counts={"0.5": 5, "1.0": 8, "2.0": 14, "+Inf": 20}))
    signals = replica_signals("pod-a", ready=True, started_at=100.0, current=after, previous=before)
    assert signals.ttft_window is not None
    assert signals.ttft_window.counts == (0.0, 0.0, 4.0, 10.0)
    # 90% of the 10 new observations lie beyond the 2 s bucket: the histogram can only say ">= 2 s".
    assert signals.time_to_first_token_seconds == pytest.approx(2.0)


def test_first_scrape_gives_an_empty_window_not_the_whole_life_of_the_pod() -> None:
    only = parse_metrics(full_page())
    signals = replica_signals("pod-a", ready=True, started_at=None, current=only, previous=None)
    assert signals.ttft_window is not None
    assert signals.ttft_window.total == 0
    assert signals.time_to_first_token_seconds is None


def test_counter_reset_uses_the_new_counts() -> None:
    before = parse_metrics(full_page(counts={"0.5": 50, "1.0": 80, "2.0": 100, "+Inf": 100}))
    after = parse_metrics(full_page(counts={"0.5": 3, "1.0": 4, "2.0": 4, "+Inf": 4}))
    signals = replica_signals("pod-a", ready=True, started_at=None, current=after, previous=before)
    assert signals.ttft_window is not None
    assert signals.ttft_window.counts == (3.0, 4.0, 4.0, 4.0)


def test_failed_scrape_gives_no_signals() -> None:
    signals = replica_signals("pod-a", ready=True, started_at=5.0, current=None, previous=None)
    assert signals == ReplicaSignals(pod="pod-a", ready=True, started_at=5.0)


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ((10, 10, 10, 10), 0.5, 0.25),  # all in the first bucket [0, 0.5]: interpolate to the middle
        ((0, 10, 10, 10), 0.9, 0.95),  # all in (0.5, 1.0]
        ((0, 0, 0, 10), 0.9, 2.0),  # all beyond the last finite bound
        ((5, 10, 10, 10), 0.5, 0.5),  # the rank sits exactly at a bucket's upper edge
        ((0, 0, 0, 0), 0.9, None),  # no observations
    ],
)
def test_quantile_interpolates_like_prometheus(counts: tuple[float, ...], q: float, expected: float | None) -> None:
    histogram = Histogram(bounds=(0.5, 1.0, 2.0, math.inf), counts=counts, total=counts[-1], sum=0.0)
    result = histogram.quantile(q)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_merge_windows_adds_observations_and_rejects_different_buckets() -> None:
    a = Histogram((1.0, math.inf), (1, 2), 2, 1.5)
    b = Histogram((1.0, math.inf), (3, 3), 3, 1.0)
    merged = merge_windows([a, b])
    assert merged == Histogram((1.0, math.inf), (4, 5), 5, 2.5)
    assert merge_windows([]) is None
    with pytest.raises(ValueError, match="bucket bounds differ"):
        a.plus(Histogram((2.0, math.inf), (1, 1), 1, 1.0))


def test_histogram_requires_an_inf_bucket() -> None:
    with pytest.raises(ValueError, match=r"\+Inf"):
        Histogram((1.0, 2.0), (1, 2), 2, 0.0)


def test_bucket_without_a_valid_bound_is_a_parse_error() -> None:
    with pytest.raises(MetricsParseError, match=r"invalid le label: '0Q\.5'"):
        parse_metrics(f'{METRIC_TIME_TO_FIRST_TOKEN}_bucket{{le="0Q.5"}} 3\n')
