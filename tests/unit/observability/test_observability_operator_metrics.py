"""The operator's own metrics: names, labels, values and lifecycle of the series."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gptoss_operator import metrics, names
from gptoss_operator.metrics import DeploymentState, OperatorMetrics


def _state(**overrides: object) -> DeploymentState:
    fields: dict[str, object] = {
        "namespace": "llm",
        "name": "chat",
        "model": "gpt-oss-20b",
        "phase": names.PHASE_READY,
        "desired_replicas": 3,
        "ready_replicas": 2,
        "gpus": 3,
        "capacity_limited": True,
        "weights_ready": True,
    }
    fields.update(overrides)
    return DeploymentState(**fields)  # type: ignore[arg-type]


def _value(m: OperatorMetrics, metric: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(metric, labels)


@pytest.fixture
def m() -> OperatorMetrics:
    return OperatorMetrics()


def test_uses_its_own_registry_not_the_global_one(m: OperatorMetrics) -> None:
    from prometheus_client import REGISTRY as GLOBAL

    assert isinstance(m.registry, CollectorRegistry)
    assert m.registry is not GLOBAL
    assert metrics.REGISTRY is not GLOBAL
    assert GLOBAL.get_sample_value(names.METRIC_DEPLOYMENTS, {"phase": "Ready"}) is None


def test_reconciles_are_counted_by_deployment_and_result_and_timed(m: OperatorMetrics) -> None:
    m.observe_reconcile("success", 0.2, namespace="llm", name="chat")
    m.observe_reconcile("success", 0.3, namespace="llm", name="chat")
    m.observe_reconcile("error", 4.0, namespace="llm", name="chat")
    assert _value(m, names.METRIC_RECONCILES, namespace="llm", name="chat", result="success") == 2
    assert _value(m, names.METRIC_RECONCILES, namespace="llm", name="chat", result="error") == 1
    assert _value(m, f"{names.METRIC_RECONCILE_DURATION}_count") == 3
    assert _value(m, f"{names.METRIC_RECONCILE_DURATION}_sum") == pytest.approx(4.5)
    assert _value(m, f"{names.METRIC_RECONCILE_DURATION}_bucket", le="0.25") == 1
    assert _value(m, f"{names.METRIC_RECONCILE_DURATION}_bucket", le="5.0") == 3


def test_unknown_reconcile_result_is_rejected_with_the_allowed_values(m: OperatorMetrics) -> None:
    with pytest.raises(ValueError, match=r"result='ok'.*success, error, invalid"):
        m.observe_reconcile("ok", 0.1, namespace="llm", name="chat")
    with pytest.raises(ValueError, match="seconds"):
        m.observe_reconcile("success", -1, namespace="llm", name="chat")


def test_api_requests_by_verb_and_code(m: OperatorMetrics) -> None:
    m.observe_api_request("PATCH", 200)
    m.observe_api_request("patch", "200")
    m.observe_api_request("get", 404)
    assert _value(m, names.METRIC_API_REQUESTS, verb="patch", code="200") == 2
    assert _value(m, names.METRIC_API_REQUESTS, verb="get", code="404") == 1


def test_every_phase_is_exported_even_when_zero(m: OperatorMetrics) -> None:
    for phase in metrics.PHASES:
        assert _value(m, names.METRIC_DEPLOYMENTS, phase=phase) == 0


def test_deployment_state_sets_the_per_deployment_gauges_and_phase_counts(m: OperatorMetrics) -> None:
    m.set_deployment_state(_state())
    m.set_deployment_state(_state(name="batch", phase=names.PHASE_PROGRESSING, capacity_limited=False))
    labels = {"namespace": "llm", "name": "chat", "model": "gpt-oss-20b"}
    assert _value(m, names.METRIC_DESIRED_REPLICAS, **labels) == 3
    assert _value(m, names.METRIC_READY_REPLICAS, **labels) == 2
    assert _value(m, names.METRIC_GPUS, **labels) == 3
    assert _value(m, names.METRIC_CAPACITY_LIMITED, **labels) == 1
    assert _value(m, names.METRIC_WEIGHTS_READY, **labels) == 1
    assert _value(m, names.METRIC_CAPACITY_LIMITED, namespace="llm", name="batch", model="gpt-oss-20b") == 0
    assert _value(m, names.METRIC_DEPLOYMENTS, phase="Ready") == 1
    assert _value(m, names.METRIC_DEPLOYMENTS, phase="Progressing") == 1

    m.set_deployment_state(_state(phase=names.PHASE_DEGRADED, ready_replicas=1))
    assert _value(m, names.METRIC_DEPLOYMENTS, phase="Ready") == 0
    assert _value(m, names.METRIC_DEPLOYMENTS, phase="Degraded") == 1
    assert _value(m, names.METRIC_READY_REPLICAS, **labels) == 1


def test_model_change_replaces_the_series_instead_of_leaving_a_stale_one(m: OperatorMetrics) -> None:
    m.set_deployment_state(_state())
    m.set_deployment_state(_state(model="gpt-oss-120b", gpus=6))
    assert _value(m, names.METRIC_GPUS, namespace="llm", name="chat", model="gpt-oss-20b") is None
    assert _value(m, names.METRIC_GPUS, namespace="llm", name="chat", model="gpt-oss-120b") == 6


def test_ttft_target_is_exported_only_while_set(m: OperatorMetrics) -> None:
    labels = {"namespace": "llm", "name": "chat", "model": "gpt-oss-20b"}
    m.set_deployment_state(_state())
    assert _value(m, names.METRIC_TTFT_TARGET, **labels) is None
    m.set_deployment_state(_state(time_to_first_token_target_seconds=0.5))
    assert _value(m, names.METRIC_TTFT_TARGET, **labels) == 0.5
    m.set_deployment_state(_state())
    assert _value(m, names.METRIC_TTFT_TARGET, **labels) is None
    with pytest.raises(ValueError, match="time_to_first_token_target_seconds"):
        m.set_deployment_state(_state(time_to_first_token_target_seconds=0.0))


def test_forget_deployment_drops_all_its_series(m: OperatorMetrics) -> None:
    m.set_deployment_state(_state(time_to_first_token_target_seconds=1.5))
    m.set_deployment_state(_state(name="other"))
    m.observe_reconcile("success", 0.1, namespace="llm", name="chat")
    m.observe_autoscaler_decision(namespace="llm", name="chat", direction="up", reason="requests_waiting")
    m.forget_deployment("llm", "chat")
    exposition = _scrape_text(m)
    assert 'name="chat"' not in exposition
    assert 'name="other"' in exposition
    assert _value(m, names.METRIC_DEPLOYMENTS, phase="Ready") == 1
    m.forget_deployment("llm", "never-seen")  # ignored


def test_autoscaler_decisions_by_direction_and_reason(m: OperatorMetrics) -> None:
    for _ in range(2):
        m.observe_autoscaler_decision(namespace="llm", name="chat", direction="up", reason="requests_waiting")
    m.observe_autoscaler_decision(namespace="llm", name="chat", direction="hold", reason="capacity_limited")
    labels = {"namespace": "llm", "name": "chat"}
    assert _value(m, names.METRIC_AUTOSCALER_DECISIONS, **labels, direction="up", reason="requests_waiting") == 2
    assert _value(m, names.METRIC_AUTOSCALER_DECISIONS, **labels, direction="hold", reason="capacity_limited") == 1
    m.observe_autoscaler_decision(namespace="llm", name="chat", direction="none", reason="within_tolerance")
    with pytest.raises(ValueError, match="direction='sideways'"):
        m.observe_autoscaler_decision(namespace="llm", name="chat", direction="sideways", reason="x")
    with pytest.raises(ValueError, match=r"reason=.*snake_case"):
        m.observe_autoscaler_decision(namespace="llm", name="chat", direction="up", reason="waiting 3.2 > 2")


def test_directions_match_the_autoscaler_policy() -> None:
    from gptoss_operator.autoscaling.policy import Direction

    assert set(metrics.AUTOSCALER_DIRECTIONS) == {d.value for d in Direction}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"phase": "Running"}, "phase"),
        ({"namespace": ""}, "namespace"),
        ({"desired_replicas": -1}, "desired_replicas"),
    ],
)
def test_bad_deployment_state_names_the_field(m: OperatorMetrics, overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        m.set_deployment_state(_state(**overrides))


def test_module_functions_feed_the_process_registry() -> None:
    metrics.set_deployment_state(
        namespace="mod-ns",
        name="mod",
        model="gpt-oss-120b",
        phase="Pending",
        desired_replicas=1,
        ready_replicas=0,
        gpus=2,
        capacity_limited=False,
        weights_ready=False,
    )
    metrics.observe_reconcile("invalid", 0.01, namespace="mod-ns", name="mod")
    metrics.observe_api_request("list", 200)
    metrics.observe_autoscaler_decision(namespace="mod-ns", name="mod", direction="down", reason="idle")
    labels = {"namespace": "mod-ns", "name": "mod", "model": "gpt-oss-120b"}
    assert metrics.REGISTRY.get_sample_value(names.METRIC_GPUS, labels) == 2
    assert metrics.REGISTRY.get_sample_value(names.METRIC_WEIGHTS_READY, labels) == 0
    metrics.forget_deployment("mod-ns", "mod")
    assert metrics.REGISTRY.get_sample_value(names.METRIC_GPUS, labels) is None


def test_metrics_server_serves_the_registry_over_http(m: OperatorMetrics) -> None:
    m.set_deployment_state(_state())
    server = metrics.start_metrics_server(0, m.registry, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    families = {f.name for f in text_string_to_metric_families(body)}
    assert names.METRIC_DESIRED_REPLICAS in families
    assert "python_gc_objects_collected" not in families  # only our registry, no default collectors


def test_metrics_server_rejects_a_bad_port() -> None:
    with pytest.raises(ValueError, match="metrics port 70000"):
        metrics.start_metrics_server(70000)


def _scrape_text(m: OperatorMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(m.registry).decode()
