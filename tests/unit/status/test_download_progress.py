"""The operator's reading of the fetcher's progress page: parsing (pure) and asking each pod sparingly."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptoss_operator.autoscaling.scrape import ScrapeError
from gptoss_operator.diagnosis import DownloadProgress
from gptoss_operator.download_progress import ProgressReader, parse_progress
from gptoss_runtime import contract
from gptoss_runtime.fetch_progress import ProgressReporter, ProgressSnapshot, metrics_text

POD: dict[str, Any] = {"metadata": {"name": "w", "uid": "u1"}, "status": {"phase": "Running", "podIP": "10.0.0.7"}}


class Pages:
    def __init__(self, text: str) -> None:
        self.text = text
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float) -> str:
        self.urls.append(url)
        if not self.text:
            raise ScrapeError(f"GET {url} failed: refused")
        return self.text


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_fetchers_own_page_parses_back() -> None:
    page = metrics_text(ProgressSnapshot(512, 2048, 12.5))
    assert parse_progress(page) == DownloadProgress(512, 2048, 12.5)
    assert parse_progress(metrics_text(ProgressSnapshot(7, None, None))) == DownloadProgress(7, None, None)


def test_a_page_without_the_figures_or_not_prometheus_is_no_progress() -> None:
    assert parse_progress("other_metric 1\n") is None
    assert parse_progress("{not prometheus") is None


def test_each_pod_is_asked_at_most_once_per_interval() -> None:
    pages, clock = Pages(metrics_text(ProgressSnapshot(100, 200, 10.0))), Clock()
    reader = ProgressReader(get_page=pages, clock=clock, min_interval_seconds=10)
    first = reader.read(POD)
    assert first == DownloadProgress(100, 200, 10.0)
    assert pages.urls == [f"http://10.0.0.7:{contract.FETCH_PROGRESS_PORT}/metrics"]
    pages.text = metrics_text(ProgressSnapshot(150, 200, 10.0))
    clock.now = 5
    assert reader.read(POD) == first  # the last answer, no request
    assert len(pages.urls) == 1
    clock.now = 11
    assert reader.read(POD) == DownloadProgress(150, 200, 10.0)
    assert len(pages.urls) == 2


def test_pods_not_running_are_not_asked_and_silent_pods_leave_progress_unknown() -> None:
    pages = Pages("")
    reader = ProgressReader(get_page=pages, clock=Clock())
    assert reader.read({"metadata": {"uid": "p"}, "status": {"phase": "Pending"}}) is None
    assert pages.urls == []
    assert reader.read(POD) is None
    assert len(pages.urls) == 1


def test_a_server_pods_fetch_init_container_is_read_over_http_while_the_pod_is_pending(tmp_path: Path) -> None:
    """A volume per replica: the pod is Pending while its init container downloads, yet has its IP; the
    reader asks the fetcher's own progress server (here on this machine) and parses its page."""
    (tmp_path / "model.safetensors").write_bytes(b"x" * 3000)
    reporter = ProgressReporter(tmp_path, total=lambda: 12000, interval_s=0.05).start(0, host="127.0.0.1")
    try:
        assert reporter.port is not None
        wait_until(lambda: reporter.snapshot().bytes_total is not None, "the reporter's first sample")
        pending = {
            "metadata": {"name": "chat-0", "uid": "u2"},
            "status": {"phase": "Pending", "podIP": "127.0.0.1"},
        }
        progress = ProgressReader(port=reporter.port).read(pending)
    finally:
        reporter.stop()
    assert progress is not None
    assert (progress.bytes_done, progress.bytes_total) == (3000, 12000)


def test_pods_that_ended_are_not_asked() -> None:
    pages = Pages(metrics_text(ProgressSnapshot(1, 2, None)))
    reader = ProgressReader(get_page=pages, clock=Clock())
    for phase in ("Succeeded", "Failed"):
        assert reader.read({"metadata": {"uid": phase}, "status": {"phase": phase, "podIP": "10.0.0.8"}}) is None
    assert pages.urls == []


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
