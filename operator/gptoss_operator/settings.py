"""Operator settings, read from the environment (prefix `GPTOSS_`) once at start-up.

Desired state is a pure function of (custom resource, these settings): the planner and builders receive
an `OperatorSettings` value and never read the environment themselves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A Triton release whose TensorRT-LLM (1.2.1) serves gpt-oss through the PyTorch backend, plus our runtime.
DEFAULT_IMAGE = "ghcr.io/gpt-oss-operator/runtime:0.1.0-triton26.07"
# The autoscaler reads each ready server pod here (GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE overrides it).
DEFAULT_METRICS_URL_TEMPLATE = "http://{pod_ip}:{port}/metrics"
METRICS_URL_PLACEHOLDERS = {"pod_ip": "10.0.0.1", "port": 8002, "pod_name": "pod", "namespace": "default"}


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

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

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
