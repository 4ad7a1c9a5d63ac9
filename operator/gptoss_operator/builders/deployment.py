"""The Deployment `<name>` that runs the Triton + TensorRT-LLM server pods.

Choices, and why:
- Rollout: `RollingUpdate`. Rendered offline it is maxSurge 0 and maxUnavailable 1: a surge pod would need a
  spare GPU that the cluster may not have, so the rollout would hang; with maxSurge 0 a replaced pod frees
  its GPUs first (with one replica that is a cold start with no server). The reconcile, which sees the free
  GPUs, asks for `rolling_update_strategy(spare_replica_fits=True)` (maxSurge 1, maxUnavailable 0: no
  replica goes dark) whenever a spare replica fits when a rollout starts (`upgrades.strategy_for`).
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
- GPUs come from `planner.gpu_placement`: the pods request `nvidia.com/gpu`, or one MIG slice's resource
  (`nvidia.com/mig-<profile>`, the device plugin's mixed strategy), and require the GPU Feature Discovery
  product label unless `gpu.nodeSelector` names the labels that identify the GPU nodes instead.
- When the operator downloads the weights into a shared claim, an init container waits for the Job's
  completion marker, so a new pod shows `Init:0/1` while the Job runs instead of crash-looping (and then
  starting minutes late because of the crash-loop back-off). It runs `sh`, which every image of the runtime
  has; only a first rollout waits there: a later revision downloads while the old pods serve
  (`gptoss_operator.rollout`, docs/rollouts.md). With a volume per replica (the default,
  builders/weights.py), the init container is the download itself (the operator's fetcher image) into the
  pod's own ephemeral volume, so every new pod downloads, in a rollout too: a surge pod keeps the old ones
  serving meanwhile, and without one a single replica is down for it (status says so, docs/rollouts.md).
- Startup budget: `spec.startupTimeoutSeconds`, else the weights read at a conservative rate plus the
  engine's warm-up; `progressDeadlineSeconds` covers the download Job's deadline, that budget and
  scheduling, so a slow first download is not reported as a failed rollout.
- The CPU stand-in (operator setting `engine_stand_in: reference`, for clusters whose GPUs are simulated)
  changes only what a CPU can honour: the engine (`--engine reference`) and the CPU and memory of the
  server and gateway. The pods still request `nvidia.com/gpu` and keep the GPU affinity and tolerations,
  so the CR schedules exactly as on a GPU cluster. The pod template then carries `gptoss.io/engine:
  reference`, which status reads back; without the stand-in the annotation is absent, so turning the
  setting on or off rolls the pods, and operators without it roll nothing.
"""

from __future__ import annotations

import copy
import json
import math
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
from gptoss_operator.builders.weights import (
    JOB_DEADLINE_SECONDS,
    cache_claim_name,
    downloads,
    downloads_per_replica,
    fetch_container,
    fetch_volumes,
    per_replica_weights_volume,
)
from gptoss_operator.catalog import model_facts
from gptoss_operator.planner import gpu_placement
from gptoss_operator.settings import ENGINE_STAND_IN_ENV
from gptoss_runtime import contract
from gptoss_runtime.gateway.store import RESPONSES_STORE_ENV

SERVER_CONTAINER: Final = "server"
GATEWAY_CONTAINER: Final = "gateway"
PLAN_VOLUME: Final = "plan"
WEIGHTS_VOLUME: Final = "weights"
TMP_VOLUME: Final = "tmp"
SHM_VOLUME: Final = "dshm"
API_KEYS_VOLUME: Final = "api-keys"

POD_LOOPBACK: Final = "127.0.0.1"
SHM_SINGLE_GPU: Final = "1Gi"
SHM_GIB_PER_GPU_MULTI: Final = 16
TERMINATION_GRACE_SECONDS: Final = 60
REVISION_HISTORY_LIMIT: Final = 3

# Startup budget (spec.startupTimeoutSeconds overrides it): the weights read at a rate that even a slow
# network volume sustains, plus the engine's warm-up (TensorRT-LLM init, CUDA graph capture, Triton's model
# load). Server pods no longer re-hash the checkpoint (the fetcher verified it once), so reading is the cost.
STARTUP_PERIOD_SECONDS: Final = 10
WEIGHTS_READ_MIB_PER_SECOND: Final = 50
ENGINE_WARMUP_SECONDS: Final = 900
# The progress deadline covers what a new pod may wait for: the weights download (the first rollout only:
# later revisions download before the pods roll), its startup budget, and scheduling and image pulls.
SCHEDULE_AND_PULL_SECONDS: Final = 900

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
            "strategy": rolling_update_strategy(spare_replica_fits=False),
            "progressDeadlineSeconds": progress_deadline_seconds(ctx),
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "template": _pod_template(ctx),
        },
    }


def rolling_update_strategy(*, spare_replica_fits: bool) -> Manifest:
    """Surge one replica when its GPUs are free (none goes dark); else replace one at a time in place."""
    surge, unavailable = (1, 0) if spare_replica_fits else (0, 1)
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


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
    if ctx.settings.stands_in:
        annotations[names.ANNOTATION_ENGINE] = engine(ctx)
    return {"labels": labels, "annotations": annotations}


def _pod_spec(ctx: BuildContext) -> Manifest:
    spec = ctx.cr.spec
    placement = gpu_placement(spec)
    containers = [_server_container(ctx)]
    if ctx.plan.openai_endpoint:
        containers.append(_gateway_container(ctx))
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(),
        "affinity": gpu_affinity(spec.affinity, list(placement.product_labels)),
        "tolerations": _tolerations(ctx),
    }
    if not pod["affinity"]:
        del pod["affinity"]  # gpu.nodeSelector replaces the GPU Feature Discovery label and the spec has none
    if downloads_per_replica(ctx):
        pod["initContainers"] = [fetch_container(ctx)]
    elif downloads(ctx):
        pod["initContainers"] = [_wait_for_weights_container(ctx)]
    pod["containers"] = containers
    pod["volumes"] = _volumes(ctx)
    # The cluster operator's placement (settings) wins over the CR's: a CR cannot leave the pool it is given.
    node_selector = {**placement.node_selector, **spec.node_selector, **ctx.settings.server_node_selector}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.runtime_class_name:
        pod["runtimeClassName"] = spec.runtime_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return pod


def image(ctx: BuildContext) -> str:
    """The CR's image, else the one recorded for it (status.runtime), else the operator's default."""
    return ctx.cr.spec.image or ctx.runtime.image or ctx.settings.default_image


def engine(ctx: BuildContext) -> str:
    """`trtllm` on GPUs; the CPU reference engine when the operator's stand-in setting says so."""
    return ctx.settings.engine_stand_in if ctx.settings.stands_in else "trtllm"


def server_command(ctx: BuildContext) -> list[str]:
    command = [
        "gptoss-runtime",
        "serve",
        "--engine",
        engine(ctx),
        "--plan",
        contract.PLAN_PATH,
        "--weights",
        contract.WEIGHTS_DIR,
    ]
    if downloads(ctx):
        command.append("--require-marker")  # serve only a download that finished
    if not ctx.settings.weights_verify_checksums:
        command.append("--skip-checksums")
    if ctx.plan.openai_endpoint:
        # Triton's HTTP and gRPC answer only inside the pod (the gateway); metrics stay on all addresses.
        command += ["--triton-address", POD_LOOPBACK]
    return command


def _server_container(ctx: BuildContext) -> Manifest:
    return {
        "name": SERVER_CONTAINER,
        "image": image(ctx),
        "imagePullPolicy": ctx.cr.spec.image_pull_policy,
        "command": server_command(ctx),
        "env": _server_env(ctx),
        "ports": server_ports(ctx.plan.openai_endpoint),
        "resources": server_resources(ctx),
        "securityContext": container_security_context(),
        **_server_probes(ctx),
        "volumeMounts": _server_mounts(ctx),
    }


def server_ports(openai_endpoint: bool) -> list[Manifest]:
    """Triton's HTTP and gRPC ports are the pod's interface only without the gateway (else on loopback)."""
    port_names = ["metrics"] if openai_endpoint else ["http", "grpc", "metrics"]
    return [{"name": name, "containerPort": contract.PORT_NAMES[name], "protocol": "TCP"} for name in port_names]


def _server_probes(ctx: BuildContext) -> Manifest:
    """Probes of the server container; the kubelet calls the pod IP, never its loopback.

    With the gateway, Triton's HTTP port listens on loopback only, so the server is probed on its metrics
    port (Triton's own HTTP server, on all addresses): it answers once tritonserver has started and for as
    long as it is alive. Whether the model is ready is the gateway's `/readyz` (a gRPC ModelReady call to
    Triton, failing at once when a drain starts), so the pod turns Ready only with a ready model.
    """
    if not ctx.plan.openai_endpoint:
        return {
            "startupProbe": _startup_probe(ctx, "/v2/health/ready", "http"),
            "readinessProbe": _http_probe("/v2/health/ready", "http", period=10, failures=3),
            "livenessProbe": _http_probe("/v2/health/live", "http", period=15, failures=4),
        }
    return {
        "startupProbe": _startup_probe(ctx, "/metrics", "metrics"),
        "livenessProbe": _http_probe("/metrics", "metrics", period=15, failures=4),
    }


def _startup_probe(ctx: BuildContext, path: str, port: str) -> Manifest:
    failures = math.ceil(startup_budget_seconds(ctx) / STARTUP_PERIOD_SECONDS)
    return _http_probe(path, port, period=STARTUP_PERIOD_SECONDS, failures=failures)


def startup_budget_seconds(ctx: BuildContext) -> int:
    """spec.startupTimeoutSeconds, else the weights read at WEIGHTS_READ_MIB_PER_SECOND plus the warm-up."""
    if ctx.cr.spec.startup_timeout_seconds is not None:
        return ctx.cr.spec.startup_timeout_seconds
    weights_mib = model_facts(ctx.cr.spec.model).loaded_weights_gib * 1024
    return math.ceil(weights_mib / WEIGHTS_READ_MIB_PER_SECOND) + ENGINE_WARMUP_SECONDS


def progress_deadline_seconds(ctx: BuildContext) -> int:
    """Longer than anything a healthy rollout waits for, so ProgressDeadlineExceeded means a real failure."""
    download = JOB_DEADLINE_SECONDS if downloads(ctx) else 0
    return download + startup_budget_seconds(ctx) + SCHEDULE_AND_PULL_SECONDS


def _server_env(ctx: BuildContext) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": "HOME", "value": POD_TMP_DIR},
        {"name": "HF_HUB_OFFLINE", "value": "1"},  # the server reads the cache; only the Job downloads
    ]
    if ctx.settings.stands_in:  # the launcher names the cluster setting in its log
        env.append({"name": ENGINE_STAND_IN_ENV, "value": ctx.settings.engine_stand_in})
    return env


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
            f"{POD_LOOPBACK}:{contract.GRPC_PORT}",
            "--port",
            str(contract.OPENAI_PORT),
            "--model-name",
            ctx.plan.model,
            *_gateway_guard_args(ctx),
        ],
        "env": [{"name": "HOME", "value": POD_TMP_DIR}, *_responses_store_env(ctx)],
        "ports": [{"name": "openai", "containerPort": contract.OPENAI_PORT, "protocol": "TCP"}],
        "resources": gateway_resources(ctx),
        "securityContext": container_security_context(),
        # /readyz fails as soon as a drain starts (SIGTERM), before the streams in flight end.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "openai"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {**tcp, "periodSeconds": 15, "failureThreshold": 4},
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": POD_TMP_DIR}, *_api_keys_mounts(ctx)],
    }


def _gateway_guard_args(ctx: BuildContext) -> list[str]:
    """Admission from the plan (the batch size running, as many queued, 429 beyond) and the API keys."""
    batch = str(ctx.plan.engine.max_batch_size)
    args = ["--max-running", batch, "--max-queued", batch]
    if ctx.cr.spec.serving.api_keys_secret is not None:
        args += ["--api-keys", contract.API_KEYS_DIR]
    return args


def _api_keys_mounts(ctx: BuildContext) -> list[Manifest]:
    if ctx.cr.spec.serving.api_keys_secret is None:
        return []
    return [{"name": API_KEYS_VOLUME, "mountPath": contract.API_KEYS_DIR, "readOnly": True}]


def _http_probe(path: str, port: str, *, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _responses_store_env(ctx: BuildContext) -> list[Manifest]:
    """The shared store of the Responses API, when the CR names one (else each gateway keeps its own)."""
    store = ctx.cr.spec.serving.responses_store
    if store is None:
        return []
    if store.url_secret_ref is not None:
        ref = store.url_secret_ref
        return [{"name": RESPONSES_STORE_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]
    return [{"name": RESPONSES_STORE_ENV, "value": store.url}]


def gateway_resources(ctx: BuildContext) -> Manifest:
    if ctx.settings.stands_in:
        return ctx.settings.stand_in_resources.gateway.manifest()
    return copy.deepcopy(GATEWAY_RESOURCES)


def server_resources(ctx: BuildContext) -> Manifest:
    """CPU and memory from the spec over the defaults; GPUs always from the plan (limit = request).

    Under the CPU stand-in, CPU and memory are the stand-in's (the spec's are sized for a GPU server);
    the GPUs stay, so the pod lands where the CR would land on a GPU cluster.
    """
    gpus = ctx.plan.gpus_per_replica
    gpu_resource = gpu_placement(ctx.cr.spec).resource  # nvidia.com/gpu, or a MIG slice's resource
    if ctx.settings.stands_in:
        resources = ctx.settings.stand_in_resources.server.manifest()
        resources.setdefault("limits", {})
        resources["requests"][gpu_resource] = str(gpus)
        resources["limits"][gpu_resource] = str(gpus)
        return resources
    spec = ctx.cr.spec
    memory = DEFAULT_MEMORY[spec.model]
    requests: dict[str, str] = {"cpu": str(DEFAULT_CPU_PER_GPU * gpus), "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    requests.update(spec.resources.requests or {})
    limits.update(spec.resources.limits or {})
    requests[gpu_resource] = str(gpus)
    limits[gpu_resource] = str(gpus)
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
    return [
        {"name": PLAN_VOLUME, "configMap": {"name": plan_config_map_name(ctx)}},
        _weights_volume(ctx),
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(ctx.plan.gpus_per_replica)}},
        *_api_keys_volumes(ctx),
        *(fetch_volumes(ctx) if downloads_per_replica(ctx) else []),
    ]


def _weights_volume(ctx: BuildContext) -> Manifest:
    """The pod's own ephemeral volume (the default), else the shared cache claim or the user's claim."""
    if downloads_per_replica(ctx):
        return per_replica_weights_volume(ctx)
    claim = ctx.cr.spec.weights.existing_claim
    claim_name = claim.claim_name if claim is not None else cache_claim_name(ctx)
    return {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": claim_name, "readOnly": True}}


def _api_keys_volumes(ctx: BuildContext) -> list[Manifest]:
    secret = ctx.cr.spec.serving.api_keys_secret
    if secret is None or not ctx.plan.openai_endpoint:
        return []
    # Mounted as a folder (no subPath): the kubelet then updates the files when the Secret changes.
    return [{"name": API_KEYS_VOLUME, "secret": {"secretName": secret}}]


def shm_size(gpus: int) -> str:
    return f"{SHM_GIB_PER_GPU_MULTI * gpus}Gi" if gpus > 1 else SHM_SINGLE_GPU


def _tolerations(ctx: BuildContext) -> list[Manifest]:
    gpu_taint: Manifest = {"key": names.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
    extra = [toleration.model_dump(by_alias=True, exclude_none=True) for toleration in ctx.cr.spec.tolerations]
    return [gpu_taint, *(item for item in extra if item != gpu_taint)]


def gpu_affinity(user_affinity: dict[str, Any] | None, products: list[str]) -> Manifest:
    """The spec's affinity with `nvidia.com/gpu.product In products` required in every node selector term.

    Required node selector terms are ORed, so the GPU rule is ANDed into each of the user's terms (or
    forms the only term); preferred terms and pod (anti-)affinity pass through unchanged. No products
    (gpu.nodeSelector stands in for GPU Feature Discovery) leaves the spec's affinity as it is.
    """
    affinity: Manifest = copy.deepcopy(user_affinity) if user_affinity else {}
    if not products:
        return affinity
    gpu_rule = {"key": names.GPU_PRODUCT_LABEL, "operator": "In", "values": products}
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms: list[Manifest] = required.get("nodeSelectorTerms") or [{}]
    for term in terms:
        term["matchExpressions"] = [*term.get("matchExpressions", []), copy.deepcopy(gpu_rule)]
    required["nodeSelectorTerms"] = terms
    return affinity
