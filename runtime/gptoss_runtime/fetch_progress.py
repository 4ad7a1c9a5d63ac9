"""Download progress of `gptoss-runtime fetch`, served as Prometheus text for the operator's status.

Why an HTTP endpoint: the download pod has no service account token (and must not need one), so it cannot
write its progress anywhere in the API; the operator reads it the way its autoscaler reads server pods,
from `http://<podIP>:<contract.FETCH_PROGRESS_PORT>/metrics`. Standard library only: the slim fetcher
image carries no Prometheus client.

What is measured: bytes on the weights volume under the destination folder (finished files and
huggingface_hub's partial `.incomplete` files alike), sampled every few seconds, against the size of the
files the download needs (the repository's file listing, skipped folders left out). Measuring the disk
rather than huggingface_hub's progress bars keeps it independent of that library's internals and counts
files a previous attempt already finished. The rate is the bytes gained over the last `RATE_WINDOW_SECONDS`
(pure: `recent_rate`); the operator derives the ETA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from gptoss_runtime import contract

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS: Final = 30.0
SAMPLE_INTERVAL_SECONDS: Final = 2.0
MAX_SAMPLES: Final = 64  # more than a window's worth at the sample interval

Sample = tuple[float, int]  # (monotonic seconds, bytes on disk)


@dataclass(frozen=True)
class ProgressSnapshot:
    bytes_done: int
    bytes_total: int | None  # None until the file listing answered (or when it cannot)
    bytes_per_second: float | None  # None until two samples span some time


# ------------------------------------------------------------------------------------------ pure parts
def recent_rate(samples: Sequence[Sample], window_s: float = RATE_WINDOW_SECONDS) -> float | None:
    """Bytes per second over the last `window_s` seconds of `samples` (oldest first), ending at the newest.

    The baseline is the newest sample at least `window_s` old (or the oldest sample when none is), so a
    stalled download reads 0 after one window rather than keeping its old rate. Bytes that vanish (a file
    deleted for a retry) count as no progress, never as a negative rate.
    """
    if len(samples) < 2:
        return None
    now, newest = samples[-1]
    baseline = samples[0]
    for sample in samples:
        if now - sample[0] >= window_s:
            baseline = sample
    elapsed = now - baseline[0]
    if elapsed <= 0:
        return None
    return max(0, newest - baseline[1]) / elapsed


def wanted_bytes(files: Iterable[tuple[str, int]], skipped_prefixes: Sequence[str]) -> int:
    """Total size of the repository's files the download fetches (skipped folders left out)."""
    return sum(size for path, size in files if not any(path.startswith(prefix) for prefix in skipped_prefixes))


def metrics_text(snapshot: ProgressSnapshot) -> str:
    """The Prometheus text page: bytes done, and total and rate once known."""
    lines = [
        f"# HELP {contract.FETCH_BYTES_DONE_METRIC} Bytes of the checkpoint on the weights volume.",
        f"# TYPE {contract.FETCH_BYTES_DONE_METRIC} gauge",
        f"{contract.FETCH_BYTES_DONE_METRIC} {snapshot.bytes_done}",
    ]
    if snapshot.bytes_total is not None:
        lines += [
            f"# HELP {contract.FETCH_BYTES_TOTAL_METRIC} Bytes the download needs in all.",
            f"# TYPE {contract.FETCH_BYTES_TOTAL_METRIC} gauge",
            f"{contract.FETCH_BYTES_TOTAL_METRIC} {snapshot.bytes_total}",
        ]
    if snapshot.bytes_per_second is not None:
        lines += [
            f"# HELP {contract.FETCH_BYTES_PER_SECOND_METRIC} Download rate over the last {RATE_WINDOW_SECONDS:g} s.",
            f"# TYPE {contract.FETCH_BYTES_PER_SECOND_METRIC} gauge",
            f"{contract.FETCH_BYTES_PER_SECOND_METRIC} {snapshot.bytes_per_second:.1f}",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- disk
def bytes_on_disk(folder: Path) -> int:
    """Sum of regular file sizes under `folder` (symbolic links not followed; vanished files skipped)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            with contextlib.suppress(OSError):  # a partial file renamed while we walk
                if not path.is_symlink():
                    total += path.lstat().st_size
    return total


# -------------------------------------------------------------------------------------------- reporter
class ProgressReporter:
    """Samples the destination folder and serves the progress page while a download runs."""

    def __init__(
        self,
        dest: Path,
        *,
        total: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = SAMPLE_INTERVAL_SECONDS,
    ) -> None:
        self.dest = dest
        self._total_source = total
        self._clock = clock
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._total: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: ThreadingHTTPServer | None = None

    def sample(self) -> None:
        done = bytes_on_disk(self.dest)
        with self._lock:
            self._samples.append((self._clock(), done))

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            samples = list(self._samples)
            total = self._total
        done = samples[-1][1] if samples else 0
        if total is not None:
            done = min(done, total)  # download records and an older revision's leftovers are not progress
        return ProgressSnapshot(done, total, recent_rate(samples))

    def start(self, port: int | None, host: str = "0.0.0.0") -> ProgressReporter:  # noqa: S104 - the pod IP
        """Sample in a thread; serve `/metrics` on `port` (None: no server; 0: any free port)."""
        if port is not None:
            try:
                self._server = ThreadingHTTPServer((host, port), _handler(self))
            except OSError as error:  # progress is a nicety: the download goes on without it
                log.warning("cannot serve download progress on port %d (%s); continuing without", port, error)
            else:
                threading.Thread(target=self._server.serve_forever, name="fetch-progress-http", daemon=True).start()
        self._thread = threading.Thread(target=self._run, name="fetch-progress", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        try:
            total = self._total_source()
        except Exception as error:  # the listing is a nicety too: bytes done and rate still tell a lot
            log.warning("cannot list the repository (%s: %s); progress has no total", type(error).__name__, error)
            total = None
        while True:
            with contextlib.suppress(OSError):
                self.sample()
            with self._lock:
                self._total = total  # after the first sample: the page never shows a total with nothing done
            if self._stopping.wait(self._interval_s):
                return


def _handler(reporter: ProgressReporter) -> type[BaseHTTPRequestHandler]:
    class ProgressHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics_text(reporter.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # a scrape every few seconds would drown the download's own log

    return ProgressHandler


@contextlib.contextmanager
def reporting(dest: Path, port: int | None, total: Callable[[], int | None]) -> Iterator[ProgressReporter]:
    """Report progress of a download into `dest` for the duration of the block."""
    reporter = ProgressReporter(dest, total=total).start(port)
    try:
        yield reporter
    finally:
        reporter.stop()


def repository_bytes(
    repo: str, revision: str, *, endpoint: str | None, token: str | None, skipped_prefixes: Sequence[str]
) -> int:
    """Bytes of the files a download of `repo@revision` fetches, from the Hub's (or mirror's) file listing."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    entries = HfApi(endpoint=endpoint, token=token).list_repo_tree(repo, revision=revision, recursive=True)
    return wanted_bytes(((e.path, e.size) for e in entries if isinstance(e, RepoFile)), skipped_prefixes)
