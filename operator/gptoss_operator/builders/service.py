"""The Service `<name>` in front of the server pods.

With the gateway (serving.openaiEndpoint, the default) the Service carries the OpenAI port and the metrics
port only: Triton's HTTP and gRPC ports then listen on the pod's loopback, for the gateway alone. Without
the gateway, Triton's HTTP and gRPC ports are the serving interface and the Service carries them.
"""

from __future__ import annotations

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest
from gptoss_runtime import contract


def service_ports(openai_endpoint: bool) -> list[Manifest]:
    if openai_endpoint:
        ports = [("metrics", contract.METRICS_PORT), ("openai", contract.OPENAI_PORT)]
    else:
        ports = [("http", contract.HTTP_PORT), ("grpc", contract.GRPC_PORT), ("metrics", contract.METRICS_PORT)]
    return [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in ports]


def build_service(ctx: BuildContext) -> Manifest:
    service = ctx.cr.spec.service
    metadata = ctx.metadata(ctx.child_name(), names.COMPONENT_SERVER, service.annotations or None)
    spec: Manifest = {
        "type": service.type,
        "selector": ctx.selector(),
        "ports": service_ports(ctx.plan.openai_endpoint),
    }
    # gRPC streams are long-lived; appProtocol lets meshes and gateways treat them right.
    for port in spec["ports"]:
        if port["name"] == "grpc":
            port["appProtocol"] = "grpc"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}
