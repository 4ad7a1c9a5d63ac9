"""Operator settings, read from the environment (prefix `GPTOSS_`) once at start-up.

Desired state is a pure function of (custom resource, these settings): the planner and builders receive
an `OperatorSettings` value and never read the environment themselves.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gptoss_runtime import contract

# A Triton release whose TensorRT-LLM (1.2.1) serves gpt-oss through the PyTorch backend, plus our runtime.
DEFAULT_IMAGE = "ghcr.io/gpt-oss-operator/runtime:0.1.0-triton26.07"
# The slim weights fetcher (runtime/Dockerfile.fetcher): huggingface_hub and `gptoss-runtime fetch` only.
DEFAULT_FETCHER_IMAGE = "ghcr.io/gpt-oss-operator/fetcher:0.1.0"
# The autoscaler reads each ready server pod here (GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE overrides it).
DEFAULT_METRICS_URL_TEMPLATE = "http://{pod_ip}:{port}/metrics"
METRICS_URL_PLACEHOLDERS = {"pod_ip": "10.0.0.1", "port": 8002, "pod_name": "pod", "namespace": "default"}
# What GPTOSS_ENGINE_STAND_IN may say: `none` serves with TensorRT-LLM on the GPUs the pods request;
# `reference` runs the runtime's numpy engine on the CPU instead (nodes whose GPUs are simulated).
EngineStandIn = Literal["none", "reference"]
ENGINE_STAND_IN_ENV: Final = contract.ENGINE_STAND_IN_ENV
# The public Hugging Face Hub: the download endpoint when neither the CR nor the operator names a mirror.
PUBLIC_HUB_ENDPOINT: Final = "https://huggingface.co"
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normalize_endpoint(url: str) -> str:
    """`url` as `scheme://host[:port][/path]`: scheme and host lower-cased, a default port and trailing
    slashes dropped (so `HTTPS://HuggingFace.co/` and `https://huggingface.co:443` are the same endpoint).

    Raises ValueError for anything but an http(s) URL with a host and no query, fragment or credentials.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: an endpoint has no query, fragment or credentials")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


class ContainerResources(BaseModel):
    """CPU and memory of one container (Kubernetes quantities); GPUs are never set here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: dict[Literal["cpu", "memory"], str] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], str] = Field(default_factory=dict)

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _numbers_are_quantities(cls, value: object) -> object:
        # Helm's toJson keeps `cpu: 1` a number; Kubernetes reads it as the quantity "1".
        if isinstance(value, dict):
            return {key: str(item) if isinstance(item, int | float) else item for key, item in value.items()}
        return value

    def manifest(self) -> dict[str, dict[str, str]]:
        manifest: dict[str, dict[str, str]] = {"requests": {str(k): v for k, v in self.requests.items()}}
        if self.limits:
            manifest["limits"] = {str(k): v for k, v in self.limits.items()}
        return manifest


class StandInResources(BaseModel):
    """Small CPU and memory for the pods of the CPU stand-in, so that several replicas fit on a small node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ContainerResources = ContainerResources(
        requests={"cpu": "100m", "memory": "768Mi"}, limits={"memory": "2Gi"}
    )
    gateway: ContainerResources = ContainerResources(
        requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "512Mi"}
    )
    fetch: ContainerResources = ContainerResources(
        requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"}
    )


class ServerCapabilities(BaseModel):
    """What the API server serves among the features that differ across the Kubernetes minors the chart claims.

    Detected once at start-up by probing the server (capabilities.py) and set on the settings, so that the pure
    builders and status see them like any other setting. The defaults describe the newest tested Kubernetes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(default="", description="The server's gitVersion (e.g. v1.34.4); empty when not detected.")
    hpa_tolerance: bool = Field(
        default=True,
        description=(
            "autoscaling/v2 HorizontalPodAutoscaler behavior.scaleUp/scaleDown.tolerance is kept (feature gate "
            "HPAConfigurableTolerance: alpha and off in Kubernetes 1.33-1.34, beta and on from 1.35)."
        ),
    )


class FetchToleration(BaseModel):
    """A core/v1 Toleration for the weights download Job's pod."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    def manifest(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, exclude_none=True)


class OperatorSettings(BaseSettings):
    """Settings of one operator process."""

    model_config = SettingsConfigDict(env_prefix="GPTOSS_", extra="ignore", frozen=True)

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch; empty watches the whole cluster. Env: comma-separated list.",
    )
    default_image: str = Field(default=DEFAULT_IMAGE, description="Server image when a CR sets none.")
    fetcher_image: str = Field(
        default=DEFAULT_FETCHER_IMAGE,
        min_length=1,
        description=(
            "Image of every weights download (the Job, or the per-replica download init container): the "
            "project's slim fetcher, never a GptOssDeployment's image, so a token Secret is only ever mounted "
            "into the operator's own image."
        ),
    )
    metrics_port: int = Field(default=8080, ge=1, le=65535, description="Port of the operator's /metrics.")
    health_port: int = Field(default=8081, ge=1, le=65535, description="Port of the operator's /healthz.")
    log_format: Literal["json", "text"] = Field(default="json", description="Log line format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    resync_seconds: float = Field(default=60.0, gt=0, description="Period of the drift-repairing resync.")
    autoscaler_interval_seconds: float = Field(default=15.0, gt=0, description="Autoscaler evaluation period.")
    autoscaler_metrics_url_template: str = Field(
        default=DEFAULT_METRICS_URL_TEMPLATE,
        description=(
            "Where the operator's autoscaler reads a server pod's metrics. Placeholders: {pod_ip} (IPv6 in "
            "brackets), {port} (Triton's metrics port), {pod_name}, {namespace}. A testing/proxy aid: tests on "
            "simulated nodes, whose pod IPs are fake, point it at real local servers."
        ),
    )
    autoscaler_scrape_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="Timeout of one autoscaler scrape of a pod's metrics."
    )
    autoscaler_startup_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="No scale-down while a replica has been ready for less than this (it has no traffic yet).",
    )
    cluster_domain: str = Field(default="cluster.local", description="DNS suffix for status endpoints.")
    weights_verify_checksums: bool = Field(
        default=True, description="Pods verify weight checksums against the fetcher's manifest before serving."
    )
    weights_mirror_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+",
        description=(
            "Hugging Face-compatible mirror the weights Job downloads from when a GptOssDeployment names no "
            "spec.weights.huggingFace.endpoint (HF_ENDPOINT of the Job); how air-gapped clusters get weights. "
            "Empty: the public Hub."
        ),
    )
    weights_allowed_endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Hugging Face endpoints a GptOssDeployment may name in spec.weights.huggingFace.endpoint (the Job sends "
            "the token there). Empty: only the public Hub (https://huggingface.co). weights_mirror_endpoint is "
            "always allowed. Env: comma-separated URLs; compared by scheme, host, port and path."
        ),
    )
    engine_stand_in: EngineStandIn = Field(
        default="none",
        description=(
            "`reference`: server pods run the CPU reference engine in place of TensorRT-LLM, with small CPU and "
            "memory requests (stand_in_resources); they still request nvidia.com/gpu and keep their GPU placement. "
            "For clusters whose GPUs are simulated. The CRs stay unchanged; status says so."
        ),
    )
    stand_in_resources: StandInResources = Field(
        default_factory=StandInResources,
        description="CPU and memory of the server, gateway and fetch containers under engine_stand_in (JSON in env).",
    )
    # Placement the cluster operator decides for every GptOssDeployment (JSON in env): a pool of GPU nodes, or
    # the nodes able to run the stand-in; the weights Job runs where the cluster operator says, which matters on
    # clusters whose every node carries the GPU taint.
    server_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels every server pod must match, over the GptOssDeployment's own nodeSelector.",
    )
    fetch_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the weights download Job's pod must match."
    )
    fetch_tolerations: list[FetchToleration] = Field(
        default_factory=list, description="Tolerations of the weights download Job's pod (core/v1 Toleration list)."
    )
    fetch_priority_class_name: str | None = Field(
        default=None, description="PriorityClass of the weights download Job's pod.", max_length=253
    )
    # The way out and the trust of every download (Job or per-replica init container), for mirrors behind a
    # proxy or served with a private CA (docs/storage.md).
    fetch_proxy: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="Proxy URL of every weights download (HTTPS_PROXY and HTTP_PROXY of the fetcher). Empty: none.",
    )
    fetch_no_proxy: str | None = Field(
        default=None,
        pattern=r"^[^\s]+$",
        description=(
            "Hosts the fetcher reaches without the proxy (NO_PROXY): comma-separated names, .domains, IPs "
            "or CIDRs, e.g. .svc,.cluster.local for an in-cluster mirror."
        ),
    )
    fetch_ca_bundle_config_map: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "ConfigMap (in each GptOssDeployment's namespace, e.g. distributed by trust-manager or OpenShift's "
            "CA injection) whose PEM bundle the fetcher trusts instead of the public roots."
        ),
    )
    fetch_ca_bundle_key: str = Field(
        default="ca-bundle.crt", min_length=1, max_length=253, description="Key of the PEM bundle in that ConfigMap."
    )
    cluster_wide_pod_reads: bool = Field(
        default=True,
        description=(
            "Read every pod of the cluster to count free GPUs (CapacityAvailable, the autoscaler's capacity cap). "
            "False: the operator reads only its own pods, in the watched namespaces; CapacityAvailable stays "
            "Unknown (reason PodsNotReadable) and scale-ups are not capped. Chart: rbac.clusterWidePodReads."
        ),
    )
    # Fleet scale (issue 12): the work queue, the watch-fed caches and leader election.
    max_concurrent_rollouts: int = Field(
        default=3,
        ge=1,
        le=1000,
        description=(
            "Most GptOssDeployments whose pods an automatic operator update (updatePolicy Automatic) rolls at "
            "once; the others wait with UpdateAvailable=True (docs/upgrades.md)."
        ),
    )
    reconcile_workers: int = Field(
        # A reconcile mostly waits on the API server (a few round trips): 8 keep a burst of new CRs (e.g. 5 a
        # second) from queueing on a loaded control plane, and bound memory and API load at start-up.
        default=8,
        ge=1,
        le=64,
        description="Reconciles that run at once (the work queue's workers).",
    )
    cache_sync_timeout_seconds: float = Field(
        default=120.0, gt=0, description="How long start-up waits for the caches' first LISTs before going on."
    )
    leader_election: bool = Field(
        default=False, description="Run only while holding the Lease (several replicas: one leader, standbys)."
    )
    leader_election_namespace: str = Field(default="default", description="Namespace of the leader Lease.")
    leader_election_lease_name: str = Field(default="gpt-oss-operator-leader", description="Name of the Lease.")
    # Timings (see leader.py): client-go's defaults are leaseDuration 15 s, renewDeadline 10 s, retryPeriod 2 s.
    # The lease is shorter here (10 s) so that a crashed leader's standby has taken over and reconciled within
    # 20 s even with a cold start after it; the leader still retries every 2 s and has 8 s (4 tries) to renew
    # before it stops, so a slow API server must stall it for that long before leadership moves. Costs: one
    # Lease write every 2 s and a standby read every second.
    leader_election_lease_seconds: float = Field(
        default=10.0, gt=0, description="Lease duration: a standby takes over this long after the last renewal."
    )
    leader_election_renew_seconds: float = Field(
        default=2.0, gt=0, description="How often the leader renews; a leader that cannot renew in time exits."
    )
    pod_name: str = Field(default="", description="This replica's identity in the Lease (env GPTOSS_POD_NAME).")
    server_capabilities: ServerCapabilities = Field(
        default_factory=ServerCapabilities,
        description=(
            "What the API server serves (docs/kubernetes-versions.md). `gptoss-operator run` replaces it with what it "
            "detects at start-up; the default (the newest tested Kubernetes) is what offline rendering assumes."
        ),
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "weights_mirror_endpoint", "fetch_proxy", "fetch_no_proxy", "fetch_ca_bundle_config_map", mode="before"
    )
    @classmethod
    def _empty_mirror_is_none(cls, value: object) -> object:
        # The chart passes an empty string when no mirror is set.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("fetcher_image", mode="before")
    @classmethod
    def _empty_fetcher_is_default(cls, value: object) -> object:
        return DEFAULT_FETCHER_IMAGE if isinstance(value, str) and not value.strip() else value

    @field_validator("weights_allowed_endpoints", mode="before")
    @classmethod
    def _split_endpoints(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("weights_allowed_endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        try:
            return [normalize_endpoint(item) for item in value]
        except ValueError as error:
            raise ValueError(
                f"GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS: {error}; give comma-separated URLs such as "
                "https://huggingface.co,http://hf-mirror.gpt-oss-system.svc:8080"
            ) from None

    @field_validator("autoscaler_metrics_url_template")
    @classmethod
    def _check_metrics_url_template(cls, value: str) -> str:
        try:
            url = value.format(**METRICS_URL_PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE={value!r} is not a valid template ({error!r}); use the "
                "placeholders {pod_ip}, {port}, {pod_name} and {namespace}, e.g. http://{pod_ip}:{port}/metrics"
            ) from None
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE={value!r} must give an http:// or https:// URL")
        return value

    @property
    def allowed_endpoints(self) -> tuple[str, ...]:
        """Endpoints a CR may name (normalized): the setting, else the public Hub; the mirror always."""
        allowed = list(self.weights_allowed_endpoints) or [PUBLIC_HUB_ENDPOINT]
        if self.weights_mirror_endpoint:
            allowed.append(normalize_endpoint(self.weights_mirror_endpoint))
        return tuple(dict.fromkeys(allowed))

    @property
    def stands_in(self) -> bool:
        """True when the CPU reference engine serves in place of TensorRT-LLM."""
        return self.engine_stand_in != "none"
