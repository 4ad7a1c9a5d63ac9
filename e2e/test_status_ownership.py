"""Status by server-side apply on the real API server: one field manager per writer, old managers migrated.

The reconcile applies its status fields and conditions as `gpt-oss-operator`, the autoscaler
`status.autoscaling` and its conditions as `gpt-oss-operator-autoscaler`; `metadata.managedFields` shows the
split. A CR whose status an older operator merge-patched (operation Update) is moved to the apply managers,
and the fields no writer states any more are then removed. An idle resync writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Kubectl, wait_until
from operator_fixtures import stop_and_show
from operator_process import (
    RESYNC_SECONDS,
    OperatorProcess,
    Volumes,
    condition,
    get_cr,
    load_sample,
    wait_for_condition,
)

pytestmark = pytest.mark.cluster

RECONCILE = "gpt-oss-operator"
AUTOSCALER = "gpt-oss-operator-autoscaler"
NAME = "gpt-oss-20b"
AUTOSCALER_INTERVAL_S = "1"
HPA = {"enabled": True, "mode": "hpa", "minReplicas": 1, "maxReplicas": 2}


@pytest.fixture
def start_operator(
    kubeconfig: Path, namespace: str, crd: None, tmp_path: Path
) -> Iterator[Callable[[], OperatorProcess]]:
    """Starts the operator (watching the test's namespace, autoscaler every second) when the test asks."""
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        env = {"GPTOSS_AUTOSCALER_INTERVAL_SECONDS": AUTOSCALER_INTERVAL_S}
        process = OperatorProcess(kubeconfig, [namespace], tmp_path / "operator.log", extra_env=env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        stop_and_show(process)


def with_managed_fields(kubectl_ns: Kubectl) -> dict[str, Any]:
    """The CR as `kubectl get` shows it with --show-managed-fields (hidden by default)."""
    return dict(kubectl_ns.json("get", "gptoss", NAME, "--show-managed-fields"))


def status_entries(cr: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The status part of each managedFields entry, by (manager, operation)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in cr["metadata"].get("managedFields") or []:
        status = (entry.get("fieldsV1") or {}).get("f:status")
        if status is not None:
            found[(entry["manager"], entry["operation"])] = status
    return found


def owned_conditions(status_fields: dict[str, Any]) -> set[str]:
    keys = (status_fields.get("f:conditions") or {}).keys()
    return {json.loads(key[2:])["type"] for key in keys if key.startswith("k:")}


def reconciles(operator: OperatorProcess) -> float:
    return operator.counter("gptoss_operator_reconciles_total", result="success")


def test_status_is_split_between_two_managers_and_an_idle_resync_writes_nothing(
    kubectl_ns: Kubectl, start_operator: Callable[[], OperatorProcess], volumes: Volumes
) -> None:
    operator = start_operator()
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml", autoscaling=HPA))
    wait_for_condition(kubectl_ns, NAME, "Ready", "True", volumes=volumes, operator=operator)
    wait_until(
        lambda: condition(get_cr(kubectl_ns, NAME), "ScalingActive").get("reason") == "HorizontalPodAutoscaler",
        timeout_s=60,
        what="the autoscaler's ScalingActive condition",
    )

    cr = with_managed_fields(kubectl_ns)
    entries = status_entries(cr)
    assert set(entries) == {(RECONCILE, "Apply"), (AUTOSCALER, "Apply")}, json.dumps(entries, indent=2)
    reconcile, autoscaler = entries[(RECONCILE, "Apply")], entries[(AUTOSCALER, "Apply")]
    assert {"f:phase", "f:plan", "f:observedGeneration"} <= set(reconcile) and "f:autoscaling" not in reconcile
    assert set(autoscaler) <= {"f:autoscaling", "f:conditions"} and "f:autoscaling" in autoscaler
    assert {"Ready", "Progressing", "WeightsReady"} <= owned_conditions(reconcile)
    assert owned_conditions(autoscaler) == {"ScalingActive"}
    assert cr["status"]["autoscaling"]["mode"] == "hpa"

    def settled() -> bool:  # the controllers' last status updates (pods, Job) are behind us
        before = get_cr(kubectl_ns, NAME)["metadata"]["resourceVersion"]
        count = reconciles(operator)
        wait_until(lambda: reconciles(operator) >= count + 2, timeout_s=30, what="two more resyncs")
        return bool(get_cr(kubectl_ns, NAME)["metadata"]["resourceVersion"] == before)

    wait_until(settled, timeout_s=120, interval_s=0.5, what="the CR to settle")
    before = get_cr(kubectl_ns, NAME)["metadata"]["resourceVersion"]
    count = reconciles(operator)
    # Two resyncs (every RESYNC_SECONDS) and the autoscaler rounds between them (every second) change nothing.
    wait_until(lambda: reconciles(operator) >= count + 2, timeout_s=60, what=f"two resyncs ({RESYNC_SECONDS}s apart)")
    assert get_cr(kubectl_ns, NAME)["metadata"]["resourceVersion"] == before


def test_a_status_written_by_the_old_merge_patch_is_migrated(
    kubectl_ns: Kubectl, start_operator: Callable[[], OperatorProcess]
) -> None:
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))  # autoscaling disabled
    old_status = {
        "status": {
            "phase": "Pending",
            "conditions": [
                # A condition type no writer states any more, and one of the autoscaler's (disabled here).
                {
                    "type": "Warming",
                    "status": "True",
                    "reason": "OldVersion",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                },
                {
                    "type": "ScalingActive",
                    "status": "True",
                    "reason": "OperatorAutoscaler",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                },
            ],
            "autoscaling": {"mode": "operator", "recommendation": 3},
        }
    }
    # As the previous operator wrote status: a merge patch under the manager its user agent named.
    kubectl_ns(
        "patch",
        "gptoss",
        NAME,
        "--subresource=status",
        "--type=merge",
        f"--field-manager={RECONCILE}",
        "-p",
        json.dumps(old_status),
    )
    assert (RECONCILE, "Update") in status_entries(with_managed_fields(kubectl_ns))

    operator = start_operator()
    seen: dict[str, Any] = {}

    def migrated() -> bool:
        seen.update(with_managed_fields(kubectl_ns))
        types = {c["type"] for c in seen.get("status", {}).get("conditions") or []}
        return (
            not [key for key in status_entries(seen) if key[1] == "Update"]
            and "Ready" in types
            and not types & {"Warming", "ScalingActive"}
            and "autoscaling" not in seen["status"]
        )

    try:
        wait_until(migrated, timeout_s=60, what="the old status fields moved to the apply managers and removed")
    except BaseException:
        print(
            json.dumps({"managedFields": seen["metadata"].get("managedFields"), "status": seen.get("status")}, indent=2)
        )
        print(operator.logs())
        raise
    entries = status_entries(seen)
    assert (RECONCILE, "Apply") in entries and "f:phase" in entries[(RECONCILE, "Apply")]
    assert "Warming" not in owned_conditions(entries[(RECONCILE, "Apply")])
