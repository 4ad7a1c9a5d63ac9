"""The Deployment `<name>` that runs the Triton + TensorRT-LLM server pods.

Choices, and why:
- Rollout: always `RollingUpdate` with maxSurge 0 and maxUnavailable 1. A surge pod would need a spare GPU
  that the cluster may not have, so the rollout would hang; with maxSurge 0 a replaced pod frees its GPUs
  first. With one replica this behaves like `Recreate`, and one strategy for every replica count means
  scaling from 1 to 2 never changes the strategy.
- `gptoss.io/generation` is on the Deployment's metadata, not on the pod template: `spec.replicas` is part
  of the CR's spec, so every scale (the scale subresource, an HPA) bumps the CR's generation, and a
  template annotation would restart every pod on every scale. The pod template carries
  `gptoss.io/plan-hash` (changes exactly when the pods must restart to read a new plan) and
  `gptoss.io/template-hash` (a hash of the whole template), so a pod tells whether it is current.
- The OpenAI-compatible gateway is a second container (`gateway`), not a thread of the server: the server
  container execs into tritonserver (PID 1, signals reach it directly), so nothing else can live there;
  a separate container also gets its own probes and resources.
- /dev/shm is a memory-backed emptyDir for every pod: the Triton Python backend keeps its shared-memory
  regions there, and with more than one GPU NCCL and the MPI workers need far more than the runtime's
  64 MiB default (16 GiB per GPU). It counts against the pod's memory, so the memory defaults cover it.
- The root filesystem is read-only; /tmp (the Triton model repository, HOME, caches) is an emptyDir.
- When the operator downloads the weights, an init container waits for the download's completion marker,
  so a new pod shows `Init:0/1` while the Job runs instead of crash-looping (and then starting minutes
  late because of the crash-loop back-off).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from gptoss_operator import names
from gptoss_operator.builders.configmap import plan_config_map_name, plan_hash
from gptoss_operator.builders.context import (
    POD_SHM_DIR,
    POD_TMP_DIR,
    BuildContext,
    Manifest,
    container_security_context,
    pod_security_context,
    short_hash,
)
from gptoss_operator.builders.weights import cache_claim_name, downloads
from gptoss_runtime import contract

SERVER_CONTAINER: Final = "server"
GATEWAY_CONTAINER: Final = "gateway"
PLAN_VOLUME: Final = "plan"
WEIGHTS_VOLUME: Final = "weights"
TMP_VOLUME: Final = "tmp"
SHM_VOLUME: Final = "dshm"

SHM_SINGLE_GPU: Final = "1Gi"
SHM_GIB_PER_GPU_MULTI: Final = 16
TERMINATION_GRACE_SECONDS: Final = 60
PROGRESS_DEADLINE_SECONDS: Final = 3600  # loading gpt-oss-120b from a network volume takes many minutes
REVISION_HISTORY_LIMIT: Final = 3

# Startup: up to 30 minutes to load the weights and warm up (period 10 s x 180).
STARTUP_PERIOD_SECONDS: Final = 10
STARTUP_FAILURE_THRESHOLD: Final = 180

# Per replica CPU and memory when the spec does not say (host memory covers weight loading and /dev/shm).
DEFAULT_CPU_PER_GPU: Final = 4
DEFAULT_MEMORY: Final = {"gpt-oss-20b": "48Gi", "gpt-oss-120b": "128Gi"}
WAIT_RESOURCES: Final[Manifest] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"memory": "64Mi"},
}
WAIT_POLL_SECONDS: Final = 10
GATEWAY_RESOURCES: Final[Manifest] = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}
PROMETHEUS_ANNOTATIONS: Final = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(contract.METRICS_PORT),
    "prometheus.io/path": "/metrics",
}


def build_deployment(ctx: BuildContext) -> Manifest:
    metadata = ctx.metadata(
        ctx.name, names.COMPONENT_SERVER, {names.ANNOTATION_GENERATION: str(ctx.cr.metadata.generation)}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": ctx.cr.spec.replicas,
            "selector": {"matchLabels": ctx.selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "template": _pod_template(ctx),
        },
    }


def _pod_template(ctx: BuildContext) -> Manifest:
    template: Manifest = {"metadata": _pod_metadata(ctx), "spec": _pod_spec(ctx)}
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    template["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH] = short_hash(canonical, length=16)
    return template


def _pod_metadata(ctx: BuildContext) -> Manifest:
    spec = ctx.cr.spec
    labels = {**spec.pod_labels, **ctx.labels(names.COMPONENT_SERVER)}
    annotations = dict(spec.pod_annotations)
    if spec.monitoring.scrape_annotations:
        annotations.update(PROMETHEUS_ANNOTATIONS)
    annotations[names.ANNOTATION_PLAN_HASH] = plan_hash(ctx)
    return {"labels": labels, "annotations": annotations}


def _pod_spec(ctx: BuildContext) -> Manifest:
    spec = ctx.cr.spec
    containers = [_server_container(ctx)]
    if ctx.plan.openai_endpoint:
        containers.append(_gateway_container(ctx))
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(),
        "affinity": gpu_affinity(spec.affinity, _gpu_products(ctx)),
        "tolerations": _tolerations(ctx),
    }
    if downloads(ctx):
        pod["initContainers"] = [_wait_for_weights_container(ctx)]
    pod["containers"] = containers
    pod["volumes"] = _volumes(ctx)
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.runtime_class_name:
        pod["runtimeClassName"] = spec.runtime_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return pod


def _gpu_products(ctx: BuildContext) -> list[str]:
    """The canonical product label, plus the spelling the spec used when it is a known alias."""
    return sorted({ctx.plan.gpu_product, ctx.cr.spec.gpu.product})


def image(ctx: BuildContext) -> str:
    return ctx.cr.spec.image or ctx.settings.default_image


def server_command(ctx: BuildContext) -> list[str]:
    command = [
        "gptoss-runtime",
        "serve",
        "--engine",
        "trtllm",
        "--plan",
        contract.PLAN_PATH,
        "--weights",
        contract.WEIGHTS_DIR,
    ]
    if downloads(ctx):
        command.append("--require-marker")  # serve only a download that finished
    if not ctx.settings.weights_verify_checksums:
        command.append("--skip-checksums")
    return command


def _server_container(ctx: BuildContext) -> Manifest:
    ports = [
        {"name": "http", "containerPort": contract.HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": contract.GRPC_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
    ]
    return {
        "name": SERVER_CONTAINER,
        "image": image(ctx),
        "imagePullPolicy": ctx.cr.spec.image_pull_policy,
        "command": server_command(ctx),
        "env": [
            {"name": "HOME", "value": POD_TMP_DIR},
            {"name": "HF_HUB_OFFLINE", "value": "1"},  # the server reads the cache; only the Job downloads
        ],
        "ports": ports,
        "resources": server_resources(ctx),
        "securityContext": container_security_context(),
        "startupProbe": _http_probe(
            "/v2/health/ready", period=STARTUP_PERIOD_SECONDS, failures=STARTUP_FAILURE_THRESHOLD
        ),
        "readinessProbe": _http_probe("/v2/health/ready", period=10, failures=3),
        "livenessProbe": _http_probe("/v2/health/live", period=15, failures=4),
        "volumeMounts": _server_mounts(ctx),
    }


def weights_marker_path(ctx: BuildContext) -> str:
    return f"{contract.WEIGHTS_DIR}/{ctx.plan.weights_subdir}/{contract.WEIGHTS_COMPLETE_MARKER}"


def _wait_for_weights_container(ctx: BuildContext) -> Manifest:
    script = (
        'until [ -f "$MARKER" ]; do echo "waiting for the weights download Job to write $MARKER"; '
        f"sleep {WAIT_POLL_SECONDS}; done"
    )
    return {
        "name": "wait-for-weights",
        "image": image(ctx),
        "imagePullPolicy": ctx.cr.spec.image_pull_policy,
        "command": ["sh", "-c", script],
        "env": [{"name": "MARKER", "value": weights_marker_path(ctx)}],
        "resources": WAIT_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": WEIGHTS_VOLUME, "mountPath": contract.WEIGHTS_DIR, "readOnly": True}],
    }


def _gateway_container(ctx: BuildContext) -> Manifest:
    tcp = {"tcpSocket": {"port": "openai"}}
    return {
        "name": GATEWAY_CONTAINER,
        "image": image(ctx),
        "imagePullPolicy": ctx.cr.spec.image_pull_policy,
        "command": [
            "gptoss-runtime",
            "gateway",
            "--triton-grpc",
            f"127.0.0.1:{contract.GRPC_PORT}",
            "--port",
            str(contract.OPENAI_PORT),
            "--model-name",
            ctx.plan.model,
        ],
        "env": [{"name": "HOME", "value": POD_TMP_DIR}],
        "ports": [{"name": "openai", "containerPort": contract.OPENAI_PORT, "protocol": "TCP"}],
        "resources": GATEWAY_RESOURCES,
        "securityContext": container_security_context(),
        "readinessProbe": {**tcp, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**tcp, "periodSeconds": 15, "failureThreshold": 4},
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": POD_TMP_DIR}],
    }


def _http_probe(path: str, *, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def server_resources(ctx: BuildContext) -> Manifest:
    """CPU and memory from the spec over the defaults; GPUs always from the plan (limit = request)."""
    spec = ctx.cr.spec
    gpus = ctx.plan.gpus_per_replica
    memory = DEFAULT_MEMORY[spec.model]
    requests: dict[str, str] = {"cpu": str(DEFAULT_CPU_PER_GPU * gpus), "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    requests.update(spec.resources.requests or {})
    limits.update(spec.resources.limits or {})
    requests[names.GPU_RESOURCE] = str(gpus)
    limits[names.GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _server_mounts(ctx: BuildContext) -> list[Manifest]:
    weights: Manifest = {"name": WEIGHTS_VOLUME, "mountPath": contract.WEIGHTS_DIR, "readOnly": True}
    claim = ctx.cr.spec.weights.existing_claim
    if claim is not None and claim.sub_path:
        weights["subPath"] = claim.sub_path
    return [
        {"name": PLAN_VOLUME, "mountPath": contract.PLAN_DIR, "readOnly": True},
        weights,
        {"name": TMP_VOLUME, "mountPath": POD_TMP_DIR},
        {"name": SHM_VOLUME, "mountPath": POD_SHM_DIR},
    ]


def _volumes(ctx: BuildContext) -> list[Manifest]:
    claim = ctx.cr.spec.weights.existing_claim
    claim_name = claim.claim_name if claim is not None else cache_claim_name(ctx)
    return [
        {"name": PLAN_VOLUME, "configMap": {"name": plan_config_map_name(ctx)}},
        {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": claim_name, "readOnly": True}},
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(ctx.plan.gpus_per_replica)}},
    ]


def shm_size(gpus: int) -> str:
    return f"{SHM_GIB_PER_GPU_MULTI * gpus}Gi" if gpus > 1 else SHM_SINGLE_GPU


def _tolerations(ctx: BuildContext) -> list[Manifest]:
    gpu_taint: Manifest = {"key": names.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
    extra = [toleration.model_dump(by_alias=True, exclude_none=True) for toleration in ctx.cr.spec.tolerations]
    return [gpu_taint, *(item for item in extra if item != gpu_taint)]


def gpu_affinity(user_affinity: dict[str, Any] | None, products: list[str]) -> Manifest:
    """The spec's affinity with `nvidia.com/gpu.product In products` required in every node selector term.

    Required node selector terms are ORed, so the GPU rule is ANDed into each of the user's terms (or
    forms the only term); preferred terms and pod (anti-)affinity pass through unchanged.
    """
    affinity: Manifest = copy.deepcopy(user_affinity) if user_affinity else {}
    gpu_rule = {"key": names.GPU_PRODUCT_LABEL, "operator": "In", "values": products}
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms: list[Manifest] = required.get("nodeSelectorTerms") or [{}]
    for term in terms:
        term["matchExpressions"] = [*term.get("matchExpressions", []), copy.deepcopy(gpu_rule)]
    required["nodeSelectorTerms"] = terms
    return affinity
