"""Operator settings, read from the environment (prefix `GPTOSS_`) once at start-up.

Desired state is a pure function of (custom resource, these settings): the planner and builders receive
an `OperatorSettings` value and never read the environment themselves.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gptoss_runtime import contract

# A Triton release whose TensorRT-LLM (1.2.1) serves gpt-oss through the PyTorch backend, plus our runtime.
DEFAULT_IMAGE = "ghcr.io/gpt-oss-operator/runtime:0.1.0-triton26.07"
# The autoscaler reads each ready server pod here (GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE overrides it).
DEFAULT_METRICS_URL_TEMPLATE = "http://{pod_ip}:{port}/metrics"
METRICS_URL_PLACEHOLDERS = {"pod_ip": "10.0.0.1", "port": 8002, "pod_name": "pod", "namespace": "default"}
# What GPTOSS_ENGINE_STAND_IN may say: `none` serves with TensorRT-LLM on the GPUs the pods request;
# `reference` runs the runtime's numpy engine on the CPU instead (nodes whose GPUs are simulated).
EngineStandIn = Literal["none", "reference"]
ENGINE_STAND_IN_ENV: Final = contract.ENGINE_STAND_IN_ENV


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
    fetcher_image: str | None = Field(
        default=None, description="Image of the weights download Job; defaults to the server image."
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
    # Fleet scale (issue 12): the work queue, the watch-fed caches and leader election.
    reconcile_workers: int = Field(
        default=4, ge=1, le=64, description="Reconciles that run at once (the work queue's workers)."
    )
    cache_sync_timeout_seconds: float = Field(
        default=120.0, gt=0, description="How long start-up waits for the caches' first LISTs before going on."
    )
    leader_election: bool = Field(
        default=False, description="Run only while holding the Lease (several replicas: one leader, standbys)."
    )
    leader_election_namespace: str = Field(default="default", description="Namespace of the leader Lease.")
    leader_election_lease_name: str = Field(default="gpt-oss-operator-leader", description="Name of the Lease.")
    leader_election_lease_seconds: float = Field(
        default=15.0, gt=0, description="Lease duration: a standby takes over this long after the last renewal."
    )
    leader_election_renew_seconds: float = Field(
        default=5.0, gt=0, description="How often the leader renews; a leader that cannot renew in time exits."
    )
    pod_name: str = Field(default="", description="This replica's identity in the Lease (env GPTOSS_POD_NAME).")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("weights_mirror_endpoint", mode="before")
    @classmethod
    def _empty_mirror_is_none(cls, value: object) -> object:
        # The chart passes an empty string when no mirror is set.
        return None if isinstance(value, str) and not value.strip() else value

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
    def effective_fetcher_image(self) -> str:
        return self.fetcher_image or self.default_image

    @property
    def stands_in(self) -> bool:
        """True when the CPU reference engine serves in place of TensorRT-LLM."""
        return self.engine_stand_in != "none"
