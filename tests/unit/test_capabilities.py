"""What the API server serves, detected at start (capabilities.py), and what the builders and status make of it."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from gptoss_operator import capabilities
from gptoss_operator.api import AutoscalingSpec
from gptoss_operator.autoscaling import record
from gptoss_operator.builders import ClusterFeatures, build_children
from gptoss_operator.cli import parse_deployment
from gptoss_operator.kube import ApiError, needs_apply, with_applied_hash
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings, ServerCapabilities

NEWEST = OperatorSettings()
OLDEST = OperatorSettings(server_capabilities=ServerCapabilities(version="v1.34.4", hpa_tolerance=False))
KEDA = ClusterFeatures(keda=True)


def cr(mode: str, tolerance: float = 0.1) -> Any:
    autoscaling: dict[str, Any] = {"enabled": True, "mode": mode, "minReplicas": 1, "maxReplicas": 3}
    autoscaling["tolerance"] = tolerance
    autoscaling["targets"] = {"requestsWaitingPerReplica": 2}
    if mode == "keda":
        autoscaling["prometheusAddress"] = "http://prometheus.monitoring:9090"
    document = {
        "apiVersion": "gptoss.io/v1alpha1",
        "kind": "GptOssDeployment",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u-1"},
        "spec": {"model": "gpt-oss-20b", "autoscaling": autoscaling},
    }
    return parse_deployment(document)


def child(settings: OperatorSettings, mode: str, kind: str, tolerance: float = 0.1) -> dict[str, Any]:
    resource = cr(mode, tolerance)
    built = build_children(resource, plan(resource.spec, settings), settings, KEDA)
    return next(item for item in built if item["kind"] == kind)


def behavior(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    found = (
        spec["behavior"]
        if obj["kind"] == "HorizontalPodAutoscaler"
        else spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    )
    return dict(found)


# ------------------------------------------------------------------------------------------ builders
@pytest.mark.parametrize(("mode", "kind"), [("hpa", "HorizontalPodAutoscaler"), ("keda", "ScaledObject")])
def test_the_tolerance_is_sent_only_to_a_server_that_keeps_it(mode: str, kind: str) -> None:
    served = behavior(child(NEWEST, mode, kind, tolerance=0.2))
    assert served["scaleUp"]["tolerance"] == served["scaleDown"]["tolerance"] == "200m"

    unserved = behavior(child(OLDEST, mode, kind, tolerance=0.2))
    assert "tolerance" not in unserved["scaleUp"] and "tolerance" not in unserved["scaleDown"]
    for direction in ("scaleUp", "scaleDown"):  # everything else as before
        assert {k: v for k, v in served[direction].items() if k != "tolerance"} == unserved[direction]


def dropped_by_old_server(applied: Mapping[str, Any]) -> dict[str, Any]:
    """What a server without HPAConfigurableTolerance stores: the applied HPA without the tolerance."""
    stored = copy.deepcopy(dict(applied))
    for direction in stored["spec"]["behavior"].values():
        direction.pop("tolerance", None)
    return stored


def test_an_hpa_built_for_the_detected_server_is_applied_once_not_on_every_reconcile() -> None:
    # Sent anyway, the dropped field makes the live HPA differ from the desired one forever.
    assumed = with_applied_hash(child(NEWEST, "hpa", "HorizontalPodAutoscaler"))
    assert needs_apply(assumed, dropped_by_old_server(assumed))

    detected = with_applied_hash(child(OLDEST, "hpa", "HorizontalPodAutoscaler"))
    assert not needs_apply(detected, dropped_by_old_server(detected))


# --------------------------------------------------------------------------------------- versions
@pytest.mark.parametrize(
    ("git_version", "parsed", "tolerance"),
    [
        ("v1.34.4", (1, 34), False),
        ("v1.35.1-eks-3b1d2", (1, 35), True),
        ("v1.36.3+k3s1", (1, 36), True),
        ("v1.33.0", (1, 33), False),
        ("", None, True),
        ("v0.0.0-master", (0, 0), True),
    ],
)
def test_versions_are_read_from_git_version(git_version: str, parsed: tuple[int, int] | None, tolerance: bool) -> None:
    assert capabilities.minor_version(git_version) == parsed
    assert capabilities.hpa_tolerance_by_version(git_version) is tolerance


# -------------------------------------------------------------------------------------- detection
class FakeServer:
    """A server that keeps or drops the probe's tolerance, or refuses the probe."""

    def __init__(self, version: str, *, keeps: bool = True, refuse: int | None = None) -> None:
        self.version = version
        self.keeps = keeps
        self.refuse = refuse
        self.probes: list[Mapping[str, Any]] = []

    def server_version(self) -> dict[str, Any]:
        return {"gitVersion": self.version, "major": "1"}

    def dry_run_create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.probes.append(obj)
        if self.refuse is not None:
            raise ApiError("create", "/apis/autoscaling/v2/...", self.refuse, "forbidden")
        stored = copy.deepcopy(dict(obj))
        if not self.keeps:
            stored["spec"]["behavior"]["scaleUp"].pop("tolerance")
        return stored


def test_detection_asks_the_server_not_its_version() -> None:
    # A 1.34 server whose administrator turned HPAConfigurableTolerance on keeps the field: it is used.
    found, how = capabilities.detect(FakeServer("v1.34.4", keeps=True), NEWEST)
    assert found == ServerCapabilities(version="v1.34.4", hpa_tolerance=True)
    assert "kept" in how

    found, how = capabilities.detect(FakeServer("v1.35.0", keeps=False), NEWEST)
    assert found == ServerCapabilities(version="v1.35.0", hpa_tolerance=False)
    assert "lost" in how


def test_the_probe_is_an_hpa_with_a_tolerance_in_a_watched_namespace() -> None:
    server = FakeServer("v1.36.3")
    capabilities.detect(server, OperatorSettings(namespaces=["team-a", "team-b"]))
    (probe,) = server.probes
    assert probe["kind"] == "HorizontalPodAutoscaler"
    assert probe["metadata"]["namespace"] == "team-a"
    assert probe["metadata"]["generateName"].startswith("gptoss-capability-probe-")
    assert probe["spec"]["behavior"]["scaleUp"]["tolerance"] == capabilities.PROBE_TOLERANCE

    capabilities.detect(server, OperatorSettings(leader_election_namespace="gpt-oss-system"))
    assert server.probes[-1]["metadata"]["namespace"] == "gpt-oss-system"


@pytest.mark.parametrize(("version", "expected"), [("v1.34.4", False), ("v1.36.3", True)])
def test_a_refused_probe_falls_back_to_the_version(version: str, expected: bool) -> None:
    found, how = capabilities.detect(FakeServer(version, refuse=403), NEWEST)
    assert found.hpa_tolerance is expected
    assert "HTTP 403" in how and "version decides" in how


def test_detected_capabilities_become_settings_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gptoss_operator.capabilities")
    settings = capabilities.with_detected_capabilities(NEWEST, FakeServer("v1.34.4", keeps=False))
    assert settings.server_capabilities == ServerCapabilities(version="v1.34.4", hpa_tolerance=False)
    assert settings.namespaces == NEWEST.namespaces  # the rest unchanged
    (line,) = [r for r in caplog.records if r.name == "gptoss_operator.capabilities"]
    assert line.levelno == logging.WARNING
    assert "v1.34.4" in line.getMessage() and "NOT served" in line.getMessage()


# ------------------------------------------------------------------------------------- status words
def spec(mode: str, tolerance: float) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate(
        {"enabled": True, "mode": mode, "minReplicas": 1, "tolerance": tolerance, "prometheusAddress": "http://p:9090"}
    )


def test_status_names_a_tolerance_the_server_ignores() -> None:
    old = OLDEST.server_capabilities
    message = capabilities.tolerance_not_applied(old, spec("hpa", 0.2))
    assert message is not None
    assert "spec.autoscaling.tolerance 0.2 is not applied" in message
    assert "v1.34.4" in message and "HPAConfigurableTolerance" in message and "fix:" in message
    assert capabilities.tolerance_not_applied(old, spec("keda", 0.05)) is not None


def test_status_is_silent_where_nothing_is_lost() -> None:
    old, new = OLDEST.server_capabilities, NEWEST.server_capabilities
    assert capabilities.tolerance_not_applied(new, spec("hpa", 0.2)) is None  # served
    assert capabilities.tolerance_not_applied(old, spec("hpa", 0.1)) is None  # Kubernetes' own default
    assert capabilities.tolerance_not_applied(old, spec("operator", 0.2)) is None  # the operator's autoscaler


def test_scaling_active_carries_the_words() -> None:
    note = capabilities.tolerance_not_applied(OLDEST.server_capabilities, spec("hpa", 0.2))
    value = record.mode_scaling_value("hpa", keda_installed=False, child_name="chat", unserved=note)
    assert (value.status, value.reason) == ("True", "HorizontalPodAutoscaler")
    assert value.message.endswith(str(note))
    plain = record.mode_scaling_value("hpa", keda_installed=False, child_name="chat")
    assert "tolerance" not in plain.message
