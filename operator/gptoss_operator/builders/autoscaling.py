"""Standard autoscaling objects for `autoscaling.mode` hpa and keda (mode operator builds neither).

Both target the GptOssDeployment itself through its scale subresource, so the operator stays the only
writer of the Deployment and every replica change goes through the CR's `spec.replicas`.

- hpa: an `autoscaling/v2` HorizontalPodAutoscaler with Pods metrics that Prometheus Adapter serves under
  the runtime's metric names (`gptoss_requests_waiting`, ...; the chart ships the adapter rules), each
  with an AverageValue target per replica. HPA cannot go below 1 replica without a feature gate, so
  minReplicas 0 becomes 1.
- keda: a `keda.sh/v1alpha1` ScaledObject (only where KEDA's CRDs exist) with one Prometheus trigger per
  signal: the query sums the signal over the deployment's pods and KEDA divides by the replicas
  (metricType AverageValue), so the threshold is the per-replica target, as for the HPA; time to first
  token is the deployment's mean over the last minute, compared as is (metricType Value).
"""

from __future__ import annotations

from typing import Final

from gptoss_operator import names
from gptoss_operator.api import AutoscalingSpec, ScalingBehavior
from gptoss_operator.builders.context import BuildContext, Manifest, quantity
from gptoss_runtime import contract

POLICY_PERIOD_SECONDS: Final = 60
KEDA_POLLING_INTERVAL_SECONDS: Final = 15


def _signals(autoscaling: AutoscalingSpec) -> list[tuple[str, float]]:
    """(metric name, per-replica target) for every target the spec sets, in a fixed order."""
    targets = autoscaling.targets
    candidates = [
        (contract.METRIC_REQUESTS_WAITING, targets.requests_waiting_per_replica),
        (contract.METRIC_REQUESTS_RUNNING, targets.requests_running_per_replica),
        (contract.METRIC_KV_CACHE_UTILIZATION, targets.kv_cache_utilization),
        (contract.METRIC_TIME_TO_FIRST_TOKEN, targets.time_to_first_token_seconds),
    ]
    return [(metric, target) for metric, target in candidates if target is not None]


def _scale_target(ctx: BuildContext) -> Manifest:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": ctx.name}


def _rules(behavior: ScalingBehavior, tolerance: float | None) -> Manifest:
    rules: Manifest = {
        "stabilizationWindowSeconds": behavior.stabilization_window_seconds,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": behavior.max_step_replicas, "periodSeconds": POLICY_PERIOD_SECONDS}],
    }
    if tolerance is not None:
        rules["tolerance"] = quantity(tolerance)
    return rules


def _behavior(ctx: BuildContext) -> Manifest:
    autoscaling = ctx.cr.spec.autoscaling
    # A server without the tolerance field drops it; sent anyway, the live HPA would never match the desired
    # one and every reconcile would apply it again (capabilities.py detects it; status says so).
    tolerance = autoscaling.tolerance if ctx.settings.server_capabilities.hpa_tolerance else None
    return {
        "scaleUp": _rules(autoscaling.scale_up, tolerance),
        "scaleDown": _rules(autoscaling.scale_down, tolerance),
    }


def build_horizontal_pod_autoscaler(ctx: BuildContext) -> Manifest | None:
    autoscaling = ctx.cr.spec.autoscaling
    if not (autoscaling.enabled and autoscaling.mode == "hpa"):
        return None
    metrics = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": metric},
                "target": {"type": "AverageValue", "averageValue": quantity(target)},
            },
        }
        for metric, target in _signals(autoscaling)
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": ctx.metadata(ctx.child_name(limit=253), names.COMPONENT_SERVER),
        "spec": {
            "scaleTargetRef": _scale_target(ctx),
            "minReplicas": max(1, autoscaling.min_replicas),
            "maxReplicas": autoscaling.max_replicas,
            "metrics": metrics,
            "behavior": _behavior(ctx),
        },
    }


def keda_query(metric: str, namespace: str, deployment: str) -> str:
    """PromQL: the signal summed over one deployment's pods (labels from the PodMonitor's relabeling)."""
    selector = f'namespace="{namespace}",gptoss_deployment="{deployment}"'
    if metric == contract.METRIC_TIME_TO_FIRST_TOKEN:
        # A histogram: the deployment's mean time to first token over the last minute (metricType Value).
        rate_sum = f"sum(rate({metric}_sum{{{selector}}}[1m]))"
        rate_count = f"sum(rate({metric}_count{{{selector}}}[1m]))"
        return f"{rate_sum} / clamp_min({rate_count}, 1e-9)"
    return f"sum by (gptoss_deployment) ({metric}{{{selector}}})"


def _plain_number(value: float) -> str:
    """KEDA thresholds are decimal strings: 4 not 4.0, 0.85 as is."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def build_scaled_object(ctx: BuildContext) -> Manifest | None:
    autoscaling = ctx.cr.spec.autoscaling
    if not (autoscaling.enabled and autoscaling.mode == "keda" and ctx.features.keda):
        return None
    if autoscaling.prometheus_address is None:
        return None  # the planner rejects this spec; never build a trigger without a server
    triggers = [
        {
            "type": "prometheus",
            "name": metric.replace("_", "-"),
            "metricType": "Value" if metric == contract.METRIC_TIME_TO_FIRST_TOKEN else "AverageValue",
            "metadata": {
                "serverAddress": autoscaling.prometheus_address,
                "query": keda_query(metric, ctx.namespace, ctx.name),
                "threshold": _plain_number(target),
                "ignoreNullValues": "true",
            },
        }
        for metric, target in _signals(autoscaling)
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": ctx.metadata(ctx.child_name(limit=253), names.COMPONENT_SERVER),
        "spec": {
            "scaleTargetRef": _scale_target(ctx),
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "pollingInterval": KEDA_POLLING_INTERVAL_SECONDS,
            "cooldownPeriod": autoscaling.scale_down.stabilization_window_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(ctx)}},
            "triggers": triggers,
        },
    }
