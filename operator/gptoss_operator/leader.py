"""Leader election on a `coordination.k8s.io/v1` Lease: one replica runs the operator, the others wait.

The rules (those of client-go's leaderelection, in small):
- a candidate takes the Lease when it is free (no holder) or when its record has not changed for a whole
  lease duration, measured on the candidate's own monotonic clock from when it last saw the record change
  (so clocks of different machines never need to agree);
- every write carries the resourceVersion it read: of two candidates racing for an expired Lease, one
  gets a 409 and stays standby;
- the leader renews every `renew_seconds`; a leader that has not renewed for `lease_seconds` minus a safety
  margin stops leading (the process exits), before any standby may take over;
- a leader that stops cleanly releases the Lease (empty holder), so a standby takes over at once.

Standbys start nothing: no watch, no reconcile, no autoscaler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from gptoss_operator.kube import ApiError, Json, Kube, ResourceType

log = logging.getLogger(__name__)

LEASES: Final = ResourceType("coordination.k8s.io/v1", "Lease", "leases")
MERGE_CONTENT_TYPE: Final = "application/merge-patch+json"
STANDBY_RETRY_SECONDS: Final = 1.0  # how often a standby looks at the Lease (takeover within lease + this)


class LeaseApi(Protocol):
    """The three Lease calls the elector makes (a Kube-backed one below; tests use a fake)."""

    def get(self) -> Json | None: ...
    def create(self, spec: Json) -> Json: ...
    def update(self, spec: Json, resource_version: str) -> Json: ...


class KubeLeaseApi:
    """`LeaseApi` over the operator's `Kube` client: a 409 on update means another candidate won."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name

    # Verbs of their own in the request counter: Lease traffic is not reconcile traffic.
    def get(self) -> Json | None:
        return self.kube.request("lease-get", "GET", LEASES.path(self.namespace, self.name))

    def create(self, spec: Json) -> Json:
        body = {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        return self.kube.request("lease-create", "POST", LEASES.path(self.namespace), body=body) or {}

    def update(self, spec: Json, resource_version: str) -> Json:
        body = {"metadata": {"resourceVersion": resource_version}, "spec": spec}
        path = LEASES.path(self.namespace, self.name)
        return self.kube.request("lease-update", "PATCH", path, body=body, content_type=MERGE_CONTENT_TYPE) or {}


def micro_time(unix_seconds: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Observed:
    record: tuple[Any, ...] | None = None
    at: float = 0.0  # monotonic time the record was last seen to change


class LeaderElector:
    """Acquires and renews one Lease for `identity`."""

    def __init__(
        self,
        api: LeaseApi,
        identity: str,
        *,
        lease_seconds: float,
        renew_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if renew_seconds >= lease_seconds:
            raise ValueError(
                f"leader_election_renew_seconds ({renew_seconds}) must be below leader_election_lease_seconds "
                f"({lease_seconds}); e.g. renew 5, lease 15"
            )
        self.api = api
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._observed = _Observed()
        self.last_renewal: float | None = None  # monotonic time of our last successful write as leader

    # ------------------------------------------------------------------------------------- one try
    def try_acquire_or_renew(self) -> bool:
        """One round: True when we hold the Lease after it (acquired now or renewed)."""
        now = self._monotonic()
        try:
            lease = self.api.get()
        except ApiError as error:
            log.warning("cannot read the leader Lease: %s", error)
            return False
        if lease is None:
            return self._write(None, transitions=0)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(spec, now)
        if holder and holder != self.identity and now - self._observed.at < self.lease_seconds:
            return False  # held by another replica that renewed within a lease duration
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        acquire = spec.get("acquireTime") if holder == self.identity else None
        return self._write(version, transitions=transitions, acquire_time=acquire)

    def release(self) -> None:
        """Give the Lease up (a clean stop): standbys take over without waiting for it to expire."""
        try:
            lease = self.api.get()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
            self.api.update({"holderIdentity": None, "renewTime": None, "acquireTime": None}, version)
            log.info("released the leader Lease")
        except ApiError as error:
            log.warning("could not release the leader Lease (it expires by itself): %s", error)

    def renewal_overdue(self) -> bool:
        """True when the leader has not renewed for so long that a standby may soon take over."""
        if self.last_renewal is None:
            return True
        margin = min(self.renew_seconds, self.lease_seconds / 3)
        return self._monotonic() - self.last_renewal > self.lease_seconds - margin

    # ------------------------------------------------------------------------------------- pieces
    def _observe(self, spec: Json, now: float) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed.record:
            self._observed = _Observed(record, now)

    def _write(self, version: str | None, *, transitions: int, acquire_time: str | None = None) -> bool:
        wall = micro_time(self._wall_clock())
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_seconds)),
            "acquireTime": acquire_time or wall,
            "renewTime": wall,
            "leaseTransitions": transitions,
        }
        try:
            if version is None:
                self.api.create(spec)
            else:
                self.api.update(spec, version)
        except ApiError as error:
            if error.code not in (409, 422):  # 409: another candidate wrote first
                log.warning("cannot write the leader Lease: %s", error)
            return False
        self.last_renewal = self._monotonic()
        return True

    # ---------------------------------------------------------------------------------- blocking
    def wait_for_leadership(self, stop: threading.Event) -> bool:
        """Block until we lead (True) or `stop` is set (False); a standby looks every second at most."""
        retry = min(STANDBY_RETRY_SECONDS, self.renew_seconds)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log.info("became the leader (%s)", self.identity)
                return True
            stop.wait(retry)
        return False

    def keep_renewing(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until `stop`; call `on_lost` once when the Lease can no longer be held."""
        while not stop.wait(self.renew_seconds):
            if self.try_acquire_or_renew():
                continue
            if self.renewal_overdue():
                log.error("could not renew the leader Lease in time; stopping so that a standby takes over")
                on_lost()
                return
