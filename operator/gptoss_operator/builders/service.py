"""The Service `<name>` in front of the server pods."""

from __future__ import annotations

from gptoss_operator import names
from gptoss_operator.builders.context import BuildContext, Manifest
from gptoss_runtime import contract


def service_ports(openai_endpoint: bool) -> list[Manifest]:
    ports = [
        ("http", contract.HTTP_PORT),
        ("grpc", contract.GRPC_PORT),
        ("metrics", contract.METRICS_PORT),
    ]
    if openai_endpoint:
        ports.append(("openai", contract.OPENAI_PORT))
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
