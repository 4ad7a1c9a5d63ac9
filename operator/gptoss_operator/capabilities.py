"""What this API server serves, detected once at start-up (docs/kubernetes-versions.md).

The chart claims every Kubernetes from its `kubeVersion` floor (1.34) up; some fields the operator writes
are served only by newer servers, or only where a feature gate is on. The operator probes the server
instead of assuming from its version, and the result becomes part of its settings
(`OperatorSettings.server_capabilities`), so that the pure builders and status read it like any setting.

- HorizontalPodAutoscaler `behavior.scale{Up,Down}.tolerance` (feature gate HPAConfigurableTolerance:
  alpha and off in 1.33-1.34, beta and on from 1.35). A server without it silently drops the field; had
  the operator kept sending it, every reconcile would find the live HPA different from the desired one and
  apply it again, forever. Probe: a dry-run create of an HPA that sets it; the answer shows whether the
  field survived. When the probe cannot run (RBAC, the probe's namespace is gone), the server's minor
  version decides (on from 1.35), and the log says so.

The probe persists nothing (dryRun=All) and asks for no verb the operator lacks (`create` on HPAs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final, Protocol

from gptoss_operator import names
from gptoss_operator.api import AutoscalingSpec
from gptoss_operator.kube import ApiError
from gptoss_operator.settings import OperatorSettings, ServerCapabilities

log = logging.getLogger(__name__)

Json = dict[str, Any]

PROBE_NAME_PREFIX: Final = "gptoss-capability-probe-"
PROBE_TOLERANCE: Final = "50m"  # any value but Kubernetes' default (0.1) shows the field survived
HPA_TOLERANCE_MINOR: Final = 35  # HPAConfigurableTolerance is beta and on by default from Kubernetes 1.35
KUBERNETES_DEFAULT_TOLERANCE: Final = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


class ProbeClient(Protocol):
    """What detection needs of `kube.Kube`."""

    def server_version(self) -> Json: ...

    def dry_run_create(self, obj: Mapping[str, Any]) -> Json: ...


# ------------------------------------------------------------------------------------- pure parts
def minor_version(git_version: str) -> tuple[int, int] | None:
    """(major, minor) of a gitVersion such as v1.34.4, v1.35.1-eks-3b1d2, v1.36.0+k3s1; None if unreadable."""
    match = _VERSION.match(git_version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def hpa_tolerance_by_version(git_version: str) -> bool:
    """The HPA tolerance field as a server of this version serves it with its default feature gates."""
    parsed = minor_version(git_version)
    # Unknown (or a development build's v0.0.0-master): assume the newest.
    return parsed is None or parsed[0] == 0 or parsed >= (1, HPA_TOLERANCE_MINOR)


def tolerance_probe(namespace: str) -> Json:
    """An HPA that sets behavior.scaleUp.tolerance (dry-run only; its target need not exist)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "generateName": PROBE_NAME_PREFIX,
            "namespace": namespace,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": PROBE_NAME_PREFIX + "target"},
            "minReplicas": 1,
            "maxReplicas": 1,
            "behavior": {"scaleUp": {"tolerance": PROBE_TOLERANCE}},
        },
    }


def tolerance_kept(stored: Mapping[str, Any]) -> bool:
    """Whether the server kept the probe's tolerance in what it would store."""
    behavior = (stored.get("spec") or {}).get("behavior") or {}
    return (behavior.get("scaleUp") or {}).get("tolerance") is not None


def describe(capabilities: ServerCapabilities, how: str) -> str:
    """One log line: the server and what it serves."""
    version = capabilities.version or "of unknown version"
    if capabilities.hpa_tolerance:
        tolerance = "HorizontalPodAutoscaler behavior tolerance served: HPAs carry spec.autoscaling.tolerance"
    else:
        tolerance = (
            "HorizontalPodAutoscaler behavior tolerance NOT served (feature gate HPAConfigurableTolerance off): "
            "HPAs and ScaledObjects are built without it and use the controller manager's cluster-wide tolerance"
        )
    return f"Kubernetes {version}: {tolerance} ({how})"


def tolerance_not_applied(capabilities: ServerCapabilities, autoscaling: AutoscalingSpec) -> str | None:
    """Status words for a CR whose HPA or ScaledObject asks for a tolerance this server ignores, else None.

    Only a tolerance other than Kubernetes' default (0.1) is reported: with the default, the HPA behaves as
    the CR asks (unless the cluster's administrator changed the cluster-wide value).
    """
    if capabilities.hpa_tolerance or not autoscaling.enabled or autoscaling.mode == "operator":
        return None
    if autoscaling.tolerance == KUBERNETES_DEFAULT_TOLERANCE:
        return None
    version = capabilities.version or "this API server"
    return (
        f"spec.autoscaling.tolerance {autoscaling.tolerance:g} is not applied: Kubernetes {version} does not serve the "
        "HorizontalPodAutoscaler behavior tolerance (feature gate HPAConfigurableTolerance, on by default from "
        f"Kubernetes 1.{HPA_TOLERANCE_MINOR}), so the HPA uses the controller manager's cluster-wide "
        "--horizontal-pod-autoscaler-tolerance (default 0.1); fix: upgrade the control plane to 1.35 or later, or "
        "enable that feature gate on kube-apiserver and kube-controller-manager, then restart the operator"
    )


# -------------------------------------------------------------------------------------- detection
def probe_namespace(settings: OperatorSettings) -> str:
    """Where the dry-run probe is sent: a watched namespace (the operator may create HPAs there)."""
    return settings.namespaces[0] if settings.namespaces else settings.leader_election_namespace


def detect(kube: ProbeClient, settings: OperatorSettings) -> tuple[ServerCapabilities, str]:
    """What the server serves, and how that was found (for the log)."""
    try:
        version = str(kube.server_version().get("gitVersion") or "")
    except ApiError as error:
        log.warning("could not read the API server's version: %s", error)
        version = ""
    namespace = probe_namespace(settings)
    try:
        kept = tolerance_kept(kube.dry_run_create(tolerance_probe(namespace)))
        how = f"a dry-run HorizontalPodAutoscaler in namespace {namespace} {'kept' if kept else 'lost'} its tolerance"
    except ApiError as error:
        kept = hpa_tolerance_by_version(version)
        how = (
            f"the dry-run probe in namespace {namespace} failed (HTTP {error.code}: {error.message[:200]}), so the "
            f"server's version decides: tolerance is on by default from 1.{HPA_TOLERANCE_MINOR}"
        )
    return ServerCapabilities(version=version, hpa_tolerance=kept), how


def with_detected_capabilities(settings: OperatorSettings, kube: ProbeClient) -> OperatorSettings:
    """`settings` with `server_capabilities` as detected now; logs what was found, once."""
    capabilities, how = detect(kube, settings)
    line = describe(capabilities, how)
    if capabilities.hpa_tolerance:
        log.info("%s", line)
    else:
        log.warning("%s", line)
    return settings.model_copy(update={"server_capabilities": capabilities})
