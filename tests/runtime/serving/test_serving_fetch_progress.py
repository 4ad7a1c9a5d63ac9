"""Download progress of `gptoss-runtime fetch`: the rate arithmetic, the page, and the served endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_fake_hub import FakeHub, _FaultyHandler, _OneRepoMirror
from serving_support import runtime_command

from gptoss_operator.diagnosis import DownloadProgress, eta_seconds
from gptoss_operator.download_progress import ProgressReader
from gptoss_runtime import contract
from gptoss_runtime.checkpoint import make_tiny_checkpoint
from gptoss_runtime.fetch_progress import (
    ProgressReporter,
    ProgressSnapshot,
    bytes_on_disk,
    metrics_text,
    recent_rate,
    repository_bytes,
    wanted_bytes,
)
from gptoss_runtime.mirror import MirrorServer

REPO = "openai/gpt-oss-20b"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHARD = "model-00000-of-00001.safetensors"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_none_until_two_samples_span_time() -> None:
    assert recent_rate([]) is None
    assert recent_rate([(1.0, 10)]) is None
    assert recent_rate([(1.0, 10), (1.0, 50)]) is None


def test_rate_spans_the_window_ending_at_the_newest_sample() -> None:
    samples = [(0.0, 0), (10.0, 1000), (20.0, 2000), (40.0, 6000)]
    # Baseline: the newest sample at least 30 s older than t=40 is t=10 (1000 bytes).
    assert recent_rate(samples, window_s=30.0) == pytest.approx(5000 / 30)
    # A window longer than the history starts at the oldest sample.
    assert recent_rate(samples, window_s=300.0) == pytest.approx(6000 / 40)


def test_a_stalled_download_reads_zero_after_one_window_and_never_negative() -> None:
    stalled = [(0.0, 0), (10.0, 5000), (45.0, 5000)]
    assert recent_rate(stalled, window_s=30.0) == 0
    shrunk = [(0.0, 5000), (40.0, 1000)]  # a corrupt file deleted for a retry
    assert recent_rate(shrunk, window_s=30.0) == 0


def test_wanted_bytes_leaves_skipped_folders_out() -> None:
    files = [("config.json", 10), ("original/model.bin", 1000), ("metal/model.bin", 500), ("model.safetensors", 90)]
    assert wanted_bytes(files, contract.SKIPPED_CHECKPOINT_FOLDERS) == 100


def test_metrics_page_names_only_what_is_known() -> None:
    early = metrics_text(ProgressSnapshot(0, None, None))
    assert f"{contract.FETCH_BYTES_DONE_METRIC} 0" in early
    assert contract.FETCH_BYTES_TOTAL_METRIC not in early
    assert contract.FETCH_BYTES_PER_SECOND_METRIC not in early
    later = metrics_text(ProgressSnapshot(512, 2048, 12.5))
    assert f"{contract.FETCH_BYTES_TOTAL_METRIC} 2048" in later
    assert f"{contract.FETCH_BYTES_PER_SECOND_METRIC} 12.5" in later


def test_bytes_on_disk_counts_partial_files_and_not_links(tmp_path: Path) -> None:
    (tmp_path / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (tmp_path / "done.safetensors").write_bytes(b"x" * 300)
    (tmp_path / ".cache" / "huggingface" / "download" / "shard.incomplete").write_bytes(b"y" * 200)
    (tmp_path / "link").symlink_to(tmp_path / "done.safetensors")
    assert bytes_on_disk(tmp_path) == 500
    assert bytes_on_disk(tmp_path / "absent") == 0


def test_reporter_samples_the_folder_and_measures_the_rate(tmp_path: Path) -> None:
    clock = FakeClock()
    reporter = ProgressReporter(tmp_path, clock=clock)
    reporter.sample()
    (tmp_path / "a").write_bytes(b"x" * 1000)
    clock.now += 10
    reporter.sample()
    snapshot = reporter.snapshot()
    assert (snapshot.bytes_done, snapshot.bytes_total) == (1000, None)
    assert snapshot.bytes_per_second == pytest.approx(100.0)


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    files = make_tiny_checkpoint(tmp_path_factory.mktemp("hub") / "repo")
    (files / "original").mkdir()
    (files / "original" / "model.bin").write_bytes(b"\0" * 4096)
    server = FakeHub(REPO, COMMIT, files).start()
    yield server
    server.stop()


def test_repository_bytes_sums_the_listing_without_skipped_folders(hub: FakeHub) -> None:
    expected = sum((hub.files_dir / name).stat().st_size for name in hub.files() if not name.startswith("original/"))
    assert expected > 0
    total = repository_bytes(
        REPO, COMMIT, endpoint=hub.url, token=None, skipped_prefixes=contract.SKIPPED_CHECKPOINT_FOLDERS
    )
    assert total == expected


def test_reporter_serves_the_page_while_it_runs(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 700)
    reporter = ProgressReporter(tmp_path, total=lambda: 1400, interval_s=0.05).start(0, host="127.0.0.1")
    try:
        assert reporter.port is not None
        url = f"http://127.0.0.1:{reporter.port}/metrics"
        page = ""
        for _ in range(200):  # until the sampler's first pass (it lists the total first)
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode()
            if contract.FETCH_BYTES_TOTAL_METRIC in page:
                break
            threading.Event().wait(0.05)  # poll for the condition, bounded by the loop
        assert f"{contract.FETCH_BYTES_DONE_METRIC} 700" in page
        assert f"{contract.FETCH_BYTES_TOTAL_METRIC} 1400" in page
    finally:
        reporter.stop()


# ------------------------------------------------------------------------ fetcher -> operator, end to end
class _HeldHandler(_FaultyHandler):
    """Serves the first half of the shard, then holds the rest until the test lets it go."""

    def file_chunks(self, name: str, path: Path, first: int, length: int) -> Iterator[bytes]:
        hub: HeldHub = self.server.hub  # type: ignore[attr-defined]
        if name != SHARD:
            yield from super().file_chunks(name, path, first, length)
            return
        data = b"".join(super().file_chunks(name, path, first, length))
        yield data[: length // 2]
        hub.release.wait(60)  # bounded: a test that fails to release does not hang the server forever
        yield data[length // 2 :]


class HeldHub(FakeHub):
    release: threading.Event

    def start(self) -> HeldHub:
        self.release = threading.Event()
        self._server = MirrorServer(_OneRepoMirror(self), ("127.0.0.1", 0), _HeldHandler)
        self._server.hub = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_operator_reads_a_running_fetchs_progress(tmp_path: Path) -> None:
    files = make_tiny_checkpoint(tmp_path / "hub")
    hub = HeldHub(REPO, COMMIT, files).start()
    port = free_port()
    command = runtime_command(
        "fetch", f"--repo={REPO}", f"--revision={COMMIT}", f"--dest={tmp_path / 'dest'}", f"--progress-port={port}"
    )
    environment = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
    fetcher = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = ProgressReader(min_interval_seconds=0, port=port)
    pod = {"metadata": {"uid": "fetch"}, "status": {"phase": "Running", "podIP": "127.0.0.1"}}
    total = sum((files / name).stat().st_size for name in hub.files())
    try:
        seen: DownloadProgress | None = None
        for _ in range(600):  # until the held shard is half there (bounded: ~60 s)
            seen = reader.read(pod)
            if seen is not None and seen.bytes_total == total and 0 < seen.bytes_done < total:
                break
            threading.Event().wait(0.1)  # poll for the condition, bounded by the loop
        assert seen is not None, "the fetcher never answered on its progress port"
        assert seen.bytes_total == total
        assert 0 < seen.bytes_done < total
        eta = eta_seconds(seen)
        assert eta is None or eta >= 0
    finally:
        hub.release.set()
        output = fetcher.communicate(timeout=120)[0].decode()
        hub.stop()
    assert fetcher.returncode == 0, output
