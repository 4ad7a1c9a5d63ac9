"""Read the weights download's progress from its pod (`gptoss-runtime fetch` serves it; see
`gptoss_runtime.fetch_progress`), for `status.weights` and the `WeightsReady` message.

The reconcile calls `ProgressReader.read` for the running download pod (the Job's), or for each server pod
whose `fetch` init container downloads (a volume per replica: the pod is still Pending then, but has its
IP, and the init container serves the same page). A reconcile must not wait on a
pod: each read has a short timeout, and a pod is asked at most once per `MIN_INTERVAL_SECONDS` (a
reconcile in between gets the last answer), so a burst of events costs one request. A pod that does not
answer (an older fetcher, a NetworkPolicy of the cluster's, a simulated pod) just leaves progress unknown.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from gptoss_operator.autoscaling.scrape import ScrapeError, metrics_url
from gptoss_operator.diagnosis import DownloadProgress
from gptoss_runtime import contract

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS: Final = 1.0
MIN_INTERVAL_SECONDS: Final = 10.0
FORGET_AFTER_SECONDS: Final = 600.0  # pods not asked about for this long are dropped from memory
MAX_PAGE_BYTES: Final = 64 * 1024  # the page is a few hundred bytes


def parse_progress(text: str) -> DownloadProgress | None:
    """The fetcher's page as progress (pure); None when it carries no bytes-done figure."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = float(sample.value)
    except ValueError:
        return None
    done = values.get(contract.FETCH_BYTES_DONE_METRIC)
    if done is None:
        return None
    total = values.get(contract.FETCH_BYTES_TOTAL_METRIC)
    return DownloadProgress(
        bytes_done=int(done),
        bytes_total=None if total is None else int(total),
        bytes_per_second=values.get(contract.FETCH_BYTES_PER_SECOND_METRIC),
    )


T = TypeVar("T")


class AskedSparingly(Generic[T]):
    """The last answer per key, asked again only after `min_interval_seconds` (one ask at a time per key: a
    caller that comes while another asks gets the previous answer); keys not asked about for
    `FORGET_AFTER_SECONDS` are dropped from memory. Shared by the readers of pods that reconciles consult."""

    def __init__(self, clock: Callable[[], float], min_interval_seconds: float) -> None:
        self._clock = clock
        self._min_interval = min_interval_seconds
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, T | None]] = {}

    def get(self, key: str, ask: Callable[[], T | None]) -> T | None:
        now = self._clock()
        with self._lock:
            for old in [k for k, (asked, _) in self._last.items() if now - asked > FORGET_AFTER_SECONDS]:
                del self._last[old]
            last = self._last.get(key)
            if last is not None and now - last[0] < self._min_interval:
                return last[1]
            self._last[key] = (now, last[1] if last else None)
        answer = ask()
        with self._lock:
            self._last[key] = (now, answer)
        return answer


def _get_page(url: str, timeout_seconds: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:  # noqa: S310 - http://<pod IP>
            return bytes(response.read(MAX_PAGE_BYTES)).decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError) as error:
        raise ScrapeError(f"GET {url} failed: {error}") from error


class ProgressReader:
    """Progress of download pods by pod uid, asked at most once per interval per pod."""

    def __init__(
        self,
        *,
        get_page: Callable[[str, float], str] = _get_page,
        clock: Callable[[], float] = time.monotonic,
        min_interval_seconds: float = MIN_INTERVAL_SECONDS,
        timeout_seconds: float = READ_TIMEOUT_SECONDS,
        port: int = contract.FETCH_PROGRESS_PORT,
    ) -> None:
        self._get_page = get_page
        self._port = port
        self._timeout = timeout_seconds
        self._answers = AskedSparingly[DownloadProgress](clock, min_interval_seconds)

    def read(self, pod: Mapping[str, Any]) -> DownloadProgress | None:
        """The pod's progress (perhaps from the last ask), or None when it has no IP, has ended or does not say."""
        status = pod.get("status") or {}
        uid = str((pod.get("metadata") or {}).get("uid") or (pod.get("metadata") or {}).get("name"))
        pod_ip = status.get("podIP")
        if status.get("phase") in ("Succeeded", "Failed") or not pod_ip:
            return None
        return self._answers.get(uid, lambda: self._ask(str(pod_ip)))

    def _ask(self, pod_ip: str) -> DownloadProgress | None:
        try:
            url = metrics_url(pod_ip, self._port)
            return parse_progress(self._get_page(url, self._timeout))
        except ScrapeError as error:
            log.debug("download progress unknown: %s", error)
            return None
