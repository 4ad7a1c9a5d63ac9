"""The kubelet's FailedMount Events of a stuck download pod: one pod, by field selector, sparingly."""

from __future__ import annotations

from typing import Any

from gptoss_operator.fetch_events import MountFailureReader, field_selector, latest_message

POD: dict[str, Any] = {"metadata": {"name": "chat-0", "namespace": "team", "uid": "u1"}}


def event(message: str, at: str, uid: str = "u1", reason: str = "FailedMount") -> dict[str, Any]:
    return {"message": message, "lastTimestamp": at, "reason": reason, "involvedObject": {"uid": uid}}


class Events:
    def __init__(self, *messages: tuple[str, str]) -> None:
        self.items = [event(text, at) for at, text in messages]
        self.asked: list[tuple[str, str]] = []

    def __call__(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.asked.append((namespace, selector))
        return list(self.items)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_newest_failed_mount_of_the_pod_is_read_by_its_uid() -> None:
    events = Events(("2026-12-05T06:00:09Z", "newer"), ("2026-12-05T06:00:01Z", "older"))
    assert MountFailureReader(events, clock=Clock()).read(POD) == "newer"
    assert events.asked == [("team", "involvedObject.uid=u1,reason=FailedMount")]
    assert field_selector("u1") == "involvedObject.uid=u1,reason=FailedMount"


def test_a_pod_is_asked_at_most_once_per_interval() -> None:
    events, clock = Events(), Clock()
    reader = MountFailureReader(events, clock=clock, min_interval_seconds=20)
    assert reader.read(POD) is None
    events.items = [event("now it failed", "2026-12-05T06:00:00Z")]
    clock.now = 10
    assert reader.read(POD) is None  # the last answer, no request
    assert len(events.asked) == 1
    clock.now = 21
    assert reader.read(POD) == "now it failed"
    assert len(events.asked) == 2


def test_no_events_no_message_and_pods_without_a_uid_are_not_asked() -> None:
    assert latest_message([], "u1") is None
    others = [
        event("another pod's", "2026-12-05T06:00:09Z", uid="u2"),
        event("x", "2026-12-05T06:00:09Z", reason="Pulled"),
    ]
    assert latest_message(others, "u1") is None  # a server that ignored the field selector
    events = Events(("2026-12-05T06:00:00Z", "x"))
    assert MountFailureReader(events).read({"metadata": {"name": "p"}}) is None
    assert events.asked == []


def test_a_volumes_own_error_wins_over_the_kubelets_later_summary() -> None:
    own = 'MountVolume.SetUp failed for volume "hf-token" : references non-existent secret key: token'
    summary = "Unable to attach or mount volumes: unmounted volumes=[hf-token]: timed out waiting for the condition"
    events = [event(own, "2026-12-05T06:00:01Z"), event(summary, "2026-12-05T06:02:01Z")]
    assert latest_message(events, "u1") == own
