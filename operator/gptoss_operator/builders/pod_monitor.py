"""The PodMonitor `<name>` (Prometheus Operator), only where its CRD exists and monitoring.podMonitor is on.

The endpoint and relabeling copy `monitoring/podmonitor_relabel.yaml` (the observability source of truth;
a test compares them): every series gets `namespace`, `gptoss_deployment` (the GptOssDeployment's name),
`gptoss_model` (gpt-oss-20b/-120b; Triton's own series keep their `model` label, the Triton model name)
and `pod`. The alerts, dashboards and the KEDA queries select on these labels.
"""

from __future__ import annotations

import copy
from typing import Final

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest


def _pod_label_meta(label: str) -> str:
    """Prometheus' meta label for a pod label: characters other than letters and digits become `_`."""
    sanitized = "".join(char if char.isalnum() else "_" for char in label)
    return f"__meta_kubernetes_pod_label_{sanitized}"


ENDPOINT: Final[Manifest] = {"port": "metrics", "path": "/metrics", "interval": "15s"}
RELABELINGS: Final[list[Manifest]] = [
    {"action": "replace", "sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "namespace"},
    {
        "action": "replace",
        "sourceLabels": [_pod_label_meta(names.LABEL_INSTANCE)],
        "targetLabel": "gptoss_deployment",
    },
    {"action": "replace", "sourceLabels": [_pod_label_meta(names.LABEL_MODEL)], "targetLabel": "gptoss_model"},
    {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"},
]


def build_pod_monitor(ctx: BuildContext) -> Manifest | None:
    if not (ctx.features.pod_monitor and ctx.cr.spec.monitoring.pod_monitor):
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": ctx.metadata(ctx.child_name(limit=253), names.COMPONENT_SERVER),
        "spec": {
            "selector": {"matchLabels": ctx.selector()},
            "namespaceSelector": {"matchNames": [ctx.namespace]},
            "podMetricsEndpoints": [{**copy.deepcopy(ENDPOINT), "relabelings": copy.deepcopy(RELABELINGS)}],
        },
    }
