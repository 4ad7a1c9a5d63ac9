"""When the operator writes a child and when it does not (pure helpers of gptoss_operator.kube)."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest

from gptoss_operator import builders, handlers, kube
from gptoss_operator import logging as operator_logging
from gptoss_operator.kube import (
    ANNOTATION_APPLIED_HASH,
    is_controlled_by,
    is_subset,
    needs_apply,
    resource_type,
    with_applied_hash,
)

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "demo", "namespace": "team", "labels": {"a": "b"}, "annotations": {}},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {
                "containers": [
                    {"name": "server", "resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}}, "args": []}
                ],
                "hostNetwork": False,
                "priorityClassName": None,
            }
        },
    },
}


def live_from(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server would return after applying `desired`: defaults added, zero values dropped."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="u1", resourceVersion="7", generation=1)
    live["metadata"].pop("annotations", None)
    live["metadata"]["annotations"] = dict(desired["metadata"].get("annotations") or {})
    spec = live["spec"]["template"]["spec"]
    spec.pop("hostNetwork")
    spec.pop("priorityClassName", None)
    spec["restartPolicy"] = "Always"  # a server default
    container = spec["containers"][0]
    container.pop("args")
    container["resources"]["limits"]["cpu"] = "500m"  # canonical quantity
    container["terminationMessagePath"] = "/dev/termination-log"
    live["status"] = {"replicas": 1}
    return live


def test_unchanged_child_is_not_written() -> None:
    desired = with_applied_hash(DESIRED)
    assert not needs_apply(desired, live_from(desired))


def test_missing_child_is_written() -> None:
    assert needs_apply(with_applied_hash(DESIRED), None)


def test_hand_edit_of_an_owned_field_is_written_back() -> None:
    desired = with_applied_hash(DESIRED)
    live = live_from(desired)
    live["spec"]["replicas"] = 4
    assert needs_apply(desired, live)


def test_change_of_desired_state_is_written() -> None:
    old = with_applied_hash(DESIRED)
    changed = copy.deepcopy(DESIRED)
    changed["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "2Gi"
    assert needs_apply(with_applied_hash(changed), live_from(old))


def test_field_we_stopped_setting_is_written_so_the_apply_removes_it() -> None:
    old = copy.deepcopy(DESIRED)
    old["metadata"]["labels"]["extra"] = "x"
    live = live_from(with_applied_hash(old))
    assert needs_apply(with_applied_hash(DESIRED), live)  # subset holds, but the hash differs


def test_terminating_child_is_written() -> None:
    desired = with_applied_hash(DESIRED)
    live = live_from(desired)
    live["metadata"]["deletionTimestamp"] = "2026-11-25T10:00:00Z"
    assert needs_apply(desired, live)


def test_hash_ignores_key_order_and_drops_nones() -> None:
    reordered = json.loads(json.dumps(DESIRED, sort_keys=True))
    first, second = with_applied_hash(DESIRED), with_applied_hash(reordered)
    assert (
        first["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
        == second["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
    )
    assert "priorityClassName" not in first["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": []}, {}, True),
        ({"a": ["x"]}, {"a": ["x", "y"]}, False),
        ({"cpu": "1000m"}, {"cpu": "1"}, True),
        ({"memory": "1Gi"}, {"memory": "1024Mi"}, True),
        ({"port": 8000}, {"port": "8000"}, True),
        ({"flag": True}, {}, False),
        ({"name": "a"}, {"name": "b"}, False),
    ],
)
def test_is_subset(desired: Any, live: Any, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def test_only_children_we_control_are_pruned() -> None:
    owned = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}}
    borrowed = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": False}]}}
    assert is_controlled_by(owned, "u1")
    assert not is_controlled_by(owned, "u2")
    assert not is_controlled_by(borrowed, "u1")


def test_every_managed_kind_has_a_rest_path() -> None:
    for kind in builders.MANAGED_KINDS:
        path = resource_type(kind).path("team", "x")
        assert path.endswith(f"/namespaces/team/{kind.plural}/x"), path
    assert resource_type("Node").path("ignored") == "/api/v1/nodes"


def test_logs_never_carry_tokens(caplog: pytest.LogCaptureFixture) -> None:
    formatter = operator_logging.JsonFormatter()
    record = logging.makeLogRecord(
        {
            "msg": "auth Bearer abc.def.ghi with token=hf_abcdefghijklmnopqrstuvwxyz and password: hunter2",
            "levelname": "INFO",
        }
    )
    line = json.loads(formatter.format(record))
    assert "abc.def.ghi" not in line["message"]
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in line["message"]
    assert "hunter2" not in line["message"]
    assert line["level"] == "INFO"


def test_child_events_find_their_owner_by_controller_reference() -> None:
    from gptoss_operator.handlers import owner_of

    child = {
        "metadata": {
            "namespace": "team",
            "labels": {"gptoss.io/deployment": "a-very-long-name-shortened"},
            "ownerReferences": [{"kind": "GptOssDeployment", "name": "a-very-long-name", "controller": True}],
        }
    }
    assert owner_of(child) == ("team", "a-very-long-name")
    assert owner_of({"metadata": {"namespace": "team", "labels": {"gptoss.io/deployment": "x"}}}) is None
    foreign = {"metadata": {**child["metadata"], "ownerReferences": [{"kind": "ReplicaSet", "controller": True}]}}
    assert owner_of(foreign) is None


def test_child_event_noise_is_filtered_but_failures_are_not() -> None:
    quiet = operator_logging.QuietChildEvents()
    noise = logging.makeLogRecord({"msg": "Handler 'child-deployments' succeeded.", "levelno": logging.INFO})
    failure = logging.makeLogRecord({"msg": "Handler 'child-deployments' failed.", "levelno": logging.ERROR})
    create = logging.makeLogRecord({"msg": "Handler 'reconcile-create' succeeded.", "levelno": logging.INFO})
    assert not quiet.filter(noise)
    assert quiet.filter(failure)
    assert quiet.filter(create)


def test_backoff_grows_with_kopfs_retry_count_unless_the_server_says() -> None:
    plain = kube.TransientApiError("get", "/x", 500, "boom", 5.0)
    assert [handlers.backoff(plain, retry) for retry in (0, 1, 2, 3, 10)] == [1, 2, 4, 8, 60]
    told = kube.TransientApiError("get", "/x", 429, "slow down", 7.0, retry_after=True)
    assert handlers.backoff(told, 0) == 7
    assert handlers.backoff(told, 5) == 32
