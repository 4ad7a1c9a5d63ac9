"""Pure builders of the children of a GptOssDeployment: CR + plan + settings in, plain manifests out.

One module per kind; `build_children` returns every desired child in a fixed order (weights first, the
server, then what points at it). `MANAGED_KINDS` lists every kind the builders can produce so the
reconciler can list children by label and prune those no longer desired (e.g. the HPA after a switch to
mode keda, the old download Job after a new revision).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders.autoscaling import build_horizontal_pod_autoscaler, build_scaled_object
from gptoss_operator.builders.configmap import build_plan_config_map, plan_hash
from gptoss_operator.builders.context import (
    BuildContext,
    ClusterFeatures,
    Manifest,
    RuntimeInputs,
    label_value,
    server_selector,
    server_selector_string,
)
from gptoss_operator.builders.deployment import build_deployment
from gptoss_operator.builders.disruption import build_pod_disruption_budget
from gptoss_operator.builders.network_policy import build_network_policy
from gptoss_operator.builders.pod_monitor import build_pod_monitor
from gptoss_operator.builders.service import build_service
from gptoss_operator.builders.weights import build_weights_job, build_weights_pvc, download_job_name
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import ServingPlan

__all__ = [
    "BUILDERS",
    "MANAGED_KINDS",
    "BuildContext",
    "ClusterFeatures",
    "ManagedKind",
    "Manifest",
    "RuntimeInputs",
    "build_children",
    "download_job_name",
    "label_value",
    "plan_hash",
    "server_selector",
    "server_selector_string",
]


@dataclass(frozen=True)
class ManagedKind:
    """A kind of child the operator creates (for listing and pruning)."""

    api_version: str
    kind: str
    plural: str
    feature: str | None = None  # ClusterFeatures attribute that must be true for the kind to exist

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


MANAGED_KINDS: Final[tuple[ManagedKind, ...]] = (
    ManagedKind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ManagedKind("batch/v1", "Job", "jobs"),
    ManagedKind("v1", "ConfigMap", "configmaps"),
    ManagedKind("apps/v1", "Deployment", "deployments"),
    ManagedKind("v1", "Service", "services"),
    ManagedKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ManagedKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ManagedKind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", feature="pod_monitor"),
    ManagedKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ManagedKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", feature="keda"),
)

Builder = Callable[[BuildContext], Manifest | None]

BUILDERS: Final[tuple[Builder, ...]] = (
    build_weights_pvc,
    build_weights_job,
    build_plan_config_map,
    build_deployment,
    build_service,
    build_pod_disruption_budget,
    build_network_policy,
    build_pod_monitor,
    build_horizontal_pod_autoscaler,
    build_scaled_object,
)


def build_children(
    cr: GptOssDeployment,
    plan: ServingPlan,
    settings: OperatorSettings,
    features: ClusterFeatures = ClusterFeatures(),  # noqa: B008 - frozen dataclass, safe as a default
    runtime: RuntimeInputs = RuntimeInputs(),  # noqa: B008 - frozen dataclass, safe as a default
) -> list[Manifest]:
    """Every desired child of `cr`, in a deterministic order (`runtime`: what status.runtime recorded)."""
    ctx = BuildContext(cr=cr, plan=plan, settings=settings, features=features, runtime=runtime)
    children = (builder(ctx) for builder in BUILDERS)
    return [child for child in children if child is not None]
