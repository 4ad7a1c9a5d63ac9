"""The NetworkPolicy `<name>`: who may reach the server pods.

Ingress only. The serving ports (the OpenAI gateway's; Triton's HTTP and gRPC only without the gateway,
since with it they listen on the pod's loopback) are open to the deployment's own namespace and the
allowed namespaces (or to everyone with allowAll); the metrics port is open to all so Prometheus can
scrape from its own namespace, and so is the download progress port while pods fill a volume of their own
(the operator reads it from its namespace). Egress is left unrestricted on purpose: the policy selects only the server
pods (the download Job is not covered, it must reach Hugging Face or a mirror), and the server itself
opens no outside connections (HF_HUB_OFFLINE); denying egress would only break DNS and tracing for no gain.
"""

from __future__ import annotations

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest
from gptoss_operator.builders.weights import downloads_per_replica
from gptoss_runtime import contract

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def build_network_policy(ctx: BuildContext) -> Manifest | None:
    policy = ctx.cr.spec.network_policy
    if not policy.enabled:
        return None
    serving_ports = [contract.OPENAI_PORT] if ctx.plan.openai_endpoint else [contract.HTTP_PORT, contract.GRPC_PORT]
    serving_rule: Manifest = {"ports": [{"protocol": "TCP", "port": port} for port in serving_ports]}
    if not policy.allow_all:
        namespaces = sorted({ctx.namespace, *policy.allowed_namespaces})
        serving_rule["from"] = [
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}]
                }
            }
        ]
    # The metrics port, and with a volume per replica the fetch init container's progress page (bytes done:
    # the operator reads it for status.weights, as it reads the download Job's, which no policy covers).
    open_ports = [contract.METRICS_PORT, *([contract.FETCH_PROGRESS_PORT] if downloads_per_replica(ctx) else [])]
    metrics_rule: Manifest = {"ports": [{"protocol": "TCP", "port": port} for port in open_ports]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": ctx.metadata(ctx.child_name(limit=253), names.COMPONENT_SERVER),
        "spec": {
            "podSelector": {"matchLabels": ctx.selector()},
            "policyTypes": ["Ingress"],
            "ingress": [serving_rule, metrics_rule],
        },
    }
