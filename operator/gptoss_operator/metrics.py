"""The operator's own Prometheus metrics.

Everything lives in a dedicated `CollectorRegistry` (`REGISTRY`), never in prometheus_client's global one,
so that tests can build fresh `OperatorMetrics` instances and the exposition holds only our series.
The handlers, the kube module and the autoscaler call the small module-level functions below; the
metric names come from `gptoss_operator.names` and are documented in docs/metrics.md.

Per-deployment series carry the labels `namespace` and `name` (the GptOssDeployment) and, where the
model matters, `model`. The recording rules in monitoring/rules/gpt-oss.rules.yaml copy `name` into
`gptoss_deployment`, the label the runtime's series get from the PodMonitor, so that both can be joined.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gptoss_operator import names

RESULT_SUCCESS: Final = "success"
RESULT_ERROR: Final = "error"
RESULT_INVALID: Final = "invalid"  # the spec was rejected (InvalidSpec); not an operator failure
RECONCILE_RESULTS: Final = (RESULT_SUCCESS, RESULT_ERROR, RESULT_INVALID)

PHASES: Final = (
    names.PHASE_PENDING,
    names.PHASE_PROGRESSING,
    names.PHASE_READY,
    names.PHASE_DEGRADED,
    names.PHASE_FAILED,
)

# The values of `gptoss_operator.autoscaling.policy.Direction`.
DIRECTION_UP: Final = "up"
DIRECTION_DOWN: Final = "down"
DIRECTION_NONE: Final = "none"  # decided to keep the replica count
DIRECTION_HOLD: Final = "hold"  # declined to decide (missing signals, replicas starting)
AUTOSCALER_DIRECTIONS: Final = (DIRECTION_UP, DIRECTION_DOWN, DIRECTION_NONE, DIRECTION_HOLD)
# A decision's reason becomes a label value: a short fixed token, never a sentence with numbers (that
# would create a new series per decision). Numbers belong in status.autoscaling and Events.
REASON_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Reconciles take from milliseconds (nothing to change) to tens of seconds (slow API server, many children).
RECONCILE_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DEPLOYMENT_LABELS: Final = ("namespace", "name", "model")


def _require_one_of(field: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not a known value; use one of {', '.join(allowed)}")


def _require_non_empty(field: str, value: str) -> None:
    if not value:
        raise ValueError(f"{field} must be a non-empty string (it becomes a Prometheus label value)")


def _require_non_negative(field: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{field}={value} must be >= 0")


@dataclass(frozen=True)
class DeploymentState:
    """What the operator last observed about one GptOssDeployment, as exported to Prometheus."""

    namespace: str
    name: str
    model: str
    phase: str
    desired_replicas: int
    ready_replicas: int
    gpus: int
    capacity_limited: bool
    weights_ready: bool
    time_to_first_token_target_seconds: float | None = None  # spec.autoscaling.targets, when set

    def validate(self) -> None:
        _require_non_empty("namespace", self.namespace)
        _require_non_empty("name", self.name)
        _require_non_empty("model", self.model)
        _require_one_of("phase", self.phase, PHASES)
        _require_non_negative("desired_replicas", self.desired_replicas)
        _require_non_negative("ready_replicas", self.ready_replicas)
        _require_non_negative("gpus", self.gpus)
        target = self.time_to_first_token_target_seconds
        if target is not None and not target > 0:
            raise ValueError(f"time_to_first_token_target_seconds={target} must be > 0 (or None when unset)")


class OperatorMetrics:
    """The operator's metric families, registered in one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], DeploymentState] = {}
        self._decision_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._reconcile_results: dict[tuple[str, str], set[str]] = {}
        reg = self.registry
        self.reconciles = Counter(
            names.METRIC_RECONCILES,
            "Reconciles of GptOssDeployments by result (success, error, invalid spec).",
            ["namespace", "name", "result"],
            registry=reg,
        )
        self.reconcile_duration = Histogram(
            names.METRIC_RECONCILE_DURATION,
            "Duration of one reconcile of a GptOssDeployment, in seconds.",
            buckets=RECONCILE_DURATION_BUCKETS,
            registry=reg,
        )
        self.api_requests = Counter(
            names.METRIC_API_REQUESTS,
            "Requests of the operator to the Kubernetes API server by verb and HTTP status code.",
            ["verb", "code"],
            registry=reg,
        )
        self.deployments = Gauge(
            names.METRIC_DEPLOYMENTS, "GptOssDeployments managed by this operator, by phase.", ["phase"], registry=reg
        )
        for phase in PHASES:
            self.deployments.labels(phase=phase).set(0)
        self.desired_replicas = Gauge(
            names.METRIC_DESIRED_REPLICAS,
            "Replicas the operator wants for a deployment (spec or autoscaler, after the capacity cap).",
            DEPLOYMENT_LABELS,
            registry=reg,
        )
        self.ready_replicas = Gauge(
            names.METRIC_READY_REPLICAS, "Ready server replicas of a deployment.", DEPLOYMENT_LABELS, registry=reg
        )
        self.gpus = Gauge(
            names.METRIC_GPUS,
            "GPUs requested by the ready and starting replicas of a deployment.",
            DEPLOYMENT_LABELS,
            registry=reg,
        )
        self.capacity_limited = Gauge(
            names.METRIC_CAPACITY_LIMITED,
            "1 while the deployment's replicas are capped by free GPUs (CapacityLimited), else 0.",
            DEPLOYMENT_LABELS,
            registry=reg,
        )
        self.weights_ready = Gauge(
            names.METRIC_WEIGHTS_READY,
            "1 when the deployment's weights are complete in the cache, else 0.",
            DEPLOYMENT_LABELS,
            registry=reg,
        )
        self.ttft_target = Gauge(
            names.METRIC_TTFT_TARGET,
            "The deployment's time-to-first-token target in seconds (only when its spec sets one).",
            DEPLOYMENT_LABELS,
            registry=reg,
        )
        self.autoscaler_decisions = Counter(
            names.METRIC_AUTOSCALER_DECISIONS,
            "Decisions of the operator's autoscaler by direction (up, down, none, hold) and reason.",
            ["namespace", "name", "direction", "reason"],
            registry=reg,
        )

    @property
    def _per_deployment_gauges(self) -> tuple[Gauge, ...]:
        return (self.desired_replicas, self.ready_replicas, self.gpus, self.capacity_limited, self.weights_ready)

    def observe_reconcile(self, result: str, seconds: float, *, namespace: str, name: str) -> None:
        _require_one_of("result", result, RECONCILE_RESULTS)
        _require_non_negative("seconds", seconds)
        _require_non_empty("namespace", namespace)
        _require_non_empty("name", name)
        with self._lock:
            self._reconcile_results.setdefault((namespace, name), set()).add(result)
        self.reconciles.labels(namespace=namespace, name=name, result=result).inc()
        self.reconcile_duration.observe(seconds)

    def observe_api_request(self, verb: str, code: int | str) -> None:
        """Count one API request; `code` is the HTTP status, or a word such as "timeout" without one."""
        _require_non_empty("verb", verb)
        _require_non_empty("code", str(code))
        self.api_requests.labels(verb=verb.lower(), code=str(code)).inc()

    def set_deployment_state(self, state: DeploymentState) -> None:
        state.validate()
        key = (state.namespace, state.name)
        with self._lock:
            previous = self._states.get(key)
            if previous is not None and previous.model != state.model:
                self._remove_gauges(previous)
            elif previous is not None and state.time_to_first_token_target_seconds is None:
                self._remove_target(previous)
            self._states[key] = state
            self._refresh_phase_counts()
        labels = {"namespace": state.namespace, "name": state.name, "model": state.model}
        self.desired_replicas.labels(**labels).set(state.desired_replicas)
        self.ready_replicas.labels(**labels).set(state.ready_replicas)
        self.gpus.labels(**labels).set(state.gpus)
        self.capacity_limited.labels(**labels).set(1 if state.capacity_limited else 0)
        self.weights_ready.labels(**labels).set(1 if state.weights_ready else 0)
        if state.time_to_first_token_target_seconds is not None:
            self.ttft_target.labels(**labels).set(state.time_to_first_token_target_seconds)

    def forget_deployment(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted deployment (unknown deployments are ignored)."""
        key = (namespace, name)
        with self._lock:
            state = self._states.pop(key, None)
            if state is not None:
                self._remove_gauges(state)
            self._refresh_phase_counts()
            for direction, reason in self._decision_labels.pop(key, set()):
                self.autoscaler_decisions.remove(namespace, name, direction, reason)
            for result in self._reconcile_results.pop(key, set()):
                self.reconciles.remove(namespace, name, result)

    def observe_autoscaler_decision(self, *, namespace: str, name: str, direction: str, reason: str) -> None:
        _require_non_empty("namespace", namespace)
        _require_non_empty("name", name)
        _require_one_of("direction", direction, AUTOSCALER_DIRECTIONS)
        if not REASON_PATTERN.match(reason):
            raise ValueError(
                f"reason={reason!r} is not a label token; use a short snake_case word such as "
                "'requests_waiting' or 'capacity_limited' (numbers and sentences belong in status and Events)"
            )
        with self._lock:
            self._decision_labels.setdefault((namespace, name), set()).add((direction, reason))
        self.autoscaler_decisions.labels(namespace=namespace, name=name, direction=direction, reason=reason).inc()

    def set_capacity_limited(self, *, namespace: str, name: str, model: str, limited: bool) -> None:
        """The autoscaler's CapacityLimited as it decides (reconciles export it too, from the condition)."""
        _require_non_empty("namespace", namespace)
        _require_non_empty("name", name)
        _require_non_empty("model", model)
        self.capacity_limited.labels(namespace=namespace, name=name, model=model).set(1 if limited else 0)

    def _remove_gauges(self, state: DeploymentState) -> None:
        for gauge in self._per_deployment_gauges:
            gauge.remove(state.namespace, state.name, state.model)
        self._remove_target(state)

    def _remove_target(self, state: DeploymentState) -> None:
        if state.time_to_first_token_target_seconds is not None:
            self.ttft_target.remove(state.namespace, state.name, state.model)

    def _refresh_phase_counts(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for state in self._states.values():
            counts[state.phase] += 1
        for phase, count in counts.items():
            self.deployments.labels(phase=phase).set(count)


# The operator process's metrics. Handlers and the kube module use the functions below.
METRICS: Final = OperatorMetrics()
REGISTRY: Final = METRICS.registry


def observe_reconcile(result: str, seconds: float, *, namespace: str, name: str) -> None:
    """Count a finished reconcile of `namespace/name` (result: success, error or invalid)."""
    METRICS.observe_reconcile(result, seconds, namespace=namespace, name=name)


def observe_api_request(verb: str, code: int | str) -> None:
    """Count one request to the API server (verb such as get, list, patch, apply; HTTP status code)."""
    METRICS.observe_api_request(verb, code)


def set_deployment_state(
    *,
    namespace: str,
    name: str,
    model: str,
    phase: str,
    desired_replicas: int,
    ready_replicas: int,
    gpus: int,
    capacity_limited: bool,
    weights_ready: bool,
    time_to_first_token_target_seconds: float | None = None,
) -> None:
    """Export what the operator last observed about one deployment (call after each reconcile).

    `time_to_first_token_target_seconds`: spec.autoscaling.targets.timeToFirstTokenSeconds when set; the
    alert GptOssTimeToFirstTokenHigh uses it instead of its 2 s default.
    """
    METRICS.set_deployment_state(
        DeploymentState(
            namespace=namespace,
            name=name,
            model=model,
            phase=phase,
            desired_replicas=desired_replicas,
            ready_replicas=ready_replicas,
            gpus=gpus,
            capacity_limited=capacity_limited,
            weights_ready=weights_ready,
            time_to_first_token_target_seconds=time_to_first_token_target_seconds,
        )
    )


def forget_deployment(namespace: str, name: str) -> None:
    """Drop the series of a deleted deployment."""
    METRICS.forget_deployment(namespace, name)


def observe_autoscaler_decision(*, namespace: str, name: str, direction: str, reason: str) -> None:
    """Count one decision of the autoscaler (direction: up, down, none or hold; reason: a snake_case token)."""
    METRICS.observe_autoscaler_decision(namespace=namespace, name=name, direction=direction, reason=reason)


def set_capacity_limited(*, namespace: str, name: str, model: str, limited: bool) -> None:
    """Set gptoss_operator_capacity_limited for a deployment (the autoscaler, when it caps or stops capping)."""
    METRICS.set_capacity_limited(namespace=namespace, name=name, model=model, limited=limited)


def start_metrics_server(
    port: int,
    registry: CollectorRegistry = REGISTRY,
    addr: str = "0.0.0.0",  # noqa: S104 - scraped by Prometheus
) -> WSGIServer:
    """Serve `registry` in the Prometheus text format on `addr:port` from a daemon thread.

    Port 0 picks a free port (read it from the returned server's `server_port`). Call `shutdown()` and
    `server_close()` on the server to stop it.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port {port} is out of range; use 1-65535 (or 0 for any free port)")
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
