"""Why a download pod cannot start, from the kubelet's FailedMount Events (for `diagnosis.token_key_missing`).

A token Secret that exists but lacks the key the download mounts leaves the pod in `ContainerCreating` (or
`Init:0/1`) with nothing in the pod's status: the kubelet says it only in an Event ("MountVolume.SetUp failed
for volume "hf-token" : references non-existent secret key: token"). The operator never reads a Secret's
data (docs/security.md), so that Event is the only place the fact exists.

Events are not watched (the cluster's every Event would stream through the operator for this one case).
Instead the reconcile asks about one pod at a time, and only a pod the diagnosis calls stuck (scheduled, a
token Secret named and present, the download container not started): one LIST of that pod's FailedMount
Events, by field selector, at most once per `MIN_INTERVAL_SECONDS` per pod (a reconcile in between gets the
last answer). The resync brings the next ask, since nothing about a stuck pod changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from gptoss_operator.download_progress import AskedSparingly

MIN_INTERVAL_SECONDS: Final = 20.0
FAILED_MOUNT: Final = "FailedMount"
SETUP_FAILED: Final = "MountVolume.SetUp failed"

# (namespace, field selector) -> the Events found; raises what the API client raises.
ListEvents = Callable[[str, str], list[dict[str, Any]]]


def field_selector(pod_uid: str) -> str:
    return f"involvedObject.uid={pod_uid},reason={FAILED_MOUNT}"


def latest_message(events: list[dict[str, Any]], pod_uid: str) -> str | None:
    """The newest FailedMount message about the pod that names a volume's own error, else the newest one (by
    last timestamp; Events without one sort first).

    The field selector already asked for exactly these; checked again so that a server (or test double)
    that ignores selectors cannot attribute another object's Event to the pod.
    """
    events = [
        e for e in events if e.get("reason") == FAILED_MOUNT and (e.get("involvedObject") or {}).get("uid") == pod_uid
    ]
    if not events:
        return None

    def rank(event: Mapping[str, Any]) -> tuple[bool, str]:
        # A volume's own error ("MountVolume.SetUp failed for volume ...: <why>") over the kubelet's summary
        # after its wait times out ("Unable to attach or mount volumes: ... timed out"), which says no why.
        specific = SETUP_FAILED in str(event.get("message") or "")
        return specific, str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

    message = max(events, key=rank).get("message")
    return str(message) if message else None


class MountFailureReader:
    """The kubelet's latest FailedMount message for a pod, asked at most once per interval per pod."""

    def __init__(
        self,
        list_events: ListEvents,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_interval_seconds: float = MIN_INTERVAL_SECONDS,
    ) -> None:
        self._list_events = list_events
        self._answers = AskedSparingly[str](clock, min_interval_seconds)

    def read(self, pod: Mapping[str, Any]) -> str | None:
        """The latest FailedMount message of `pod` (perhaps from the last ask), or None when there is none."""
        meta = pod.get("metadata") or {}
        uid, namespace = meta.get("uid"), meta.get("namespace")
        if not uid or not namespace:
            return None
        return self._answers.get(
            str(uid), lambda: latest_message(self._list_events(str(namespace), field_selector(str(uid))), str(uid))
        )
