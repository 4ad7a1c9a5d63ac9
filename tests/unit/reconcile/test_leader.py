"""Leader election on a Lease, with a fake Lease API and fake clocks: who leads, when a standby takes over."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from gptoss_operator.kube import ApiError
from gptoss_operator.leader import LeaderElector


class FakeLeases:
    """One Lease with resourceVersion checks (a stale write is a 409), like the API server."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiError("get", "lease", 503, "API server away")

    def get(self) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise ApiError("create", "lease", 409, "already exists")
        self.version += 1
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(spec)}
        return copy.deepcopy(self.lease)

    def update(self, spec: dict[str, Any], resource_version: str) -> dict[str, Any]:
        self._check()
        assert self.lease is not None
        if resource_version != self.lease["metadata"]["resourceVersion"]:
            raise ApiError("patch", "lease", 409, "the object has been modified")
        self.version += 1
        merged = {**self.lease["spec"], **spec}
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": merged}
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: FakeLeases, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(leases, identity, lease_seconds=15, renew_seconds=5, monotonic=clock, wall_clock=clock)


def test_one_candidate_leads_the_other_stands_by() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 5
    assert a.try_acquire_or_renew()  # renewed
    clock.now += 12  # b saw the record change 12 s ago: still within the lease
    assert not b.try_acquire_or_renew()
    assert leases.lease is not None and leases.lease["spec"]["holderIdentity"] == "a"


def test_a_standby_takes_over_a_lease_that_stopped_changing() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the record now
    clock.now += 16  # a was killed: no renewal for a whole lease duration
    assert b.try_acquire_or_renew()
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "b" and leases.lease["spec"]["leaseTransitions"] == 1


def test_of_two_racing_candidates_only_one_wins() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    lease = leases.get()
    assert lease is None
    assert a.try_acquire_or_renew()
    assert not b._write(None, transitions=0)  # b read "no Lease" too, but a created it first


def test_a_released_lease_is_taken_at_once() -> None:
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    a.release()
    assert b.try_acquire_or_renew()


def test_a_leader_that_cannot_renew_gives_up_before_the_lease_expires() -> None:
    leases, clock = FakeLeases(), Clock()
    a = elector(leases, "a", clock)
    assert a.try_acquire_or_renew()
    leases.down = True
    clock.now += 9
    assert not a.try_acquire_or_renew() and not a.renewal_overdue()
    clock.now += 2  # 11 s without renewal: within the margin before 15 s, a standby may soon take over
    assert a.renewal_overdue()


def test_keep_renewing_calls_on_lost_once() -> None:
    leases = FakeLeases()
    a = LeaderElector(leases, "a", lease_seconds=0.3, renew_seconds=0.05)
    assert a.try_acquire_or_renew()
    leases.down = True
    lost = threading.Event()
    a.keep_renewing(threading.Event(), lost.set)  # returns once the Lease is lost
    assert lost.is_set()


def test_renew_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="leader_election_renew_seconds"):
        LeaderElector(FakeLeases(), "a", lease_seconds=5, renew_seconds=5)
