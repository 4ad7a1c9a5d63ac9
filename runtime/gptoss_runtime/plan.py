"""The serving plan: the one typed contract between the operator and the inference pod.

The operator's planner produces a `ServingPlan`; the operator stores it in a ConfigMap (key
`contract.PLAN_FILE_NAME`, JSON with camelCase keys) and in `status.plan`; the pod's launcher reads it
and renders the Triton model repository and TensorRT-LLM options from it.

Compatibility: a pod may run an older runtime than the operator that wrote its plan (the operator was
upgraded, the pods were not). So the reader is lenient where it is safe and strict where it is not:
- `schemaVersion` is the plan's major version. A change an older reader can safely ignore (a new
  optional field) keeps it; a change that alters the meaning of existing fields raises it. A reader
  refuses a major version newer than its own with `PlanVersionError`, which names both versions and the fix.
- Fields this runtime does not know are dropped before validation and logged once per read (a newer
  operator's optional additions). The models themselves stay strict (`extra="forbid"`), so a typo in the
  operator's own planner is still an error where the plan is built.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ModelName = Literal["gpt-oss-20b", "gpt-oss-120b"]
MoeBackend = Literal["TRITON", "CUTLASS", "TRTLLM"]
KvCacheDtype = Literal["auto", "bf16", "fp8"]
ReasoningEffort = Literal["low", "medium", "high"]

PLAN_SCHEMA_VERSION = 1  # the major version this runtime writes and reads

log = logging.getLogger(__name__)


class PlanVersionError(ValueError):
    """The plan was written for a major version of the contract this runtime does not know."""


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class EngineSettings(_CamelModel):
    """Resolved TensorRT-LLM LLM-API settings (PyTorch backend)."""

    tensor_parallel_size: int = Field(ge=1, description="GPUs that split each layer (TP).")
    moe_expert_parallel_size: int = Field(ge=1, description="GPUs that split the experts (EP).")
    moe_backend: MoeBackend = Field(description="MoE kernels; TRITON is the MXFP4 path on Hopper.")
    attention_data_parallel: bool = Field(description="Attention data parallelism (enable_attention_dp).")
    max_seq_len: int = Field(ge=256, description="Longest prompt + output, in tokens.")
    max_batch_size: int = Field(ge=1, description="Most sequences scheduled in one step.")
    max_num_tokens: int = Field(ge=256, description="Most tokens (prefill + decode) in one step.")
    kv_cache_free_memory_fraction: float = Field(
        gt=0, le=0.95, description="Share of free GPU memory after weights given to the KV cache."
    )
    kv_cache_dtype: KvCacheDtype = Field(description="KV cache element type; auto follows the model (BF16).")
    cuda_graph_batch_sizes: tuple[int, ...] = Field(description="Batch sizes captured as CUDA graphs.")
    cuda_graph_padding: bool = Field(default=True, description="Pad batches up to a captured graph size.")
    enable_chunked_prefill: bool = Field(
        default=False, description="Prefill prompts longer than max_num_tokens in chunks (enable_chunked_prefill)."
    )
    stream_interval: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Steps between streamed outputs per request (stream_interval; NVIDIA's gpt-oss recipes use 20).",
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the engine, e.g. TRTLLM_ENABLE_PDL=1."
    )


class KvBudget(_CamelModel):
    """How the GPU memory of one replica is spent, as the planner estimates it."""

    gpu_memory_gib: float = Field(description="Total memory of the replica's GPUs.")
    weights_gib: float = Field(description="Loaded weights across the replica's GPUs.")
    activation_headroom_gib: float = Field(description="Reserved for activations, CUDA graphs, NCCL.")
    kv_cache_gib: float = Field(description="Left for the KV cache.")
    kv_bytes_per_token: int = Field(description="KV cache bytes per token (full-attention layers).")
    kv_cache_tokens: int = Field(description="Tokens the KV cache holds.")
    max_concurrent_sequences: int = Field(description="Sequences of maxSeqLen that fit at once.")


class ServingPlan(_CamelModel):
    """Everything the pod needs to serve one gpt-oss deployment."""

    schema_version: int = Field(default=PLAN_SCHEMA_VERSION, description="Plan format version.")
    model: ModelName = Field(description="The model served.")
    gpu_product: str = Field(description="GPU Feature Discovery product label value.")
    gpus_per_replica: int = Field(ge=1, le=8, description="GPUs each replica uses (tensor/expert parallel group).")
    engine: EngineSettings = Field(description="Resolved TensorRT-LLM settings.")
    kv_budget: KvBudget = Field(description="How the replica's GPU memory is spent.")
    default_reasoning_effort: ReasoningEffort = Field(
        default="medium", description="Reasoning effort when a request sets none."
    )
    openai_endpoint: bool = Field(default=True, description="Whether the OpenAI-compatible gateway runs.")
    weights_subdir: str = Field(
        default="", description="Folder under the weights volume that holds config.json (PVC subPath)."
    )
    weights_revision: str | None = Field(default=None, description="Pinned revision the weights must match.")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServingPlan:
        """Read a plan, perhaps written by a newer operator: unknown fields dropped (logged), major version checked."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a serving plan is a JSON object, not {type(data).__name__}")
        check_schema_version(data)
        unknown: list[str] = []
        known = _known_fields(cls, data, "", unknown)
        if unknown:
            log.info(
                "the plan has fields this runtime does not know (written by a newer operator?); ignored: %s",
                ", ".join(unknown),
            )
        return cls.model_validate(known)

    @classmethod
    def load(cls, path: Path) -> ServingPlan:
        return cls.from_json(path.read_text(encoding="utf-8"))


def check_schema_version(data: dict[str, Any]) -> None:
    """Refuse a plan of a newer major version: its fields may mean what this runtime cannot honour."""
    version = data.get("schemaVersion", PLAN_SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PlanVersionError(f"schemaVersion: {version!r} is not a plan version (a positive integer)")
    if version > PLAN_SCHEMA_VERSION:
        raise PlanVersionError(
            f"schemaVersion: the plan is of version {version}, this runtime reads up to version "
            f"{PLAN_SCHEMA_VERSION}; run a server image as new as the operator (spec.image or the operator's "
            "default image)"
        )


def _known_fields(model: type[BaseModel], data: dict[str, Any], prefix: str, unknown: list[str]) -> dict[str, Any]:
    """`data` without the keys `model` does not declare (recursively); their paths are added to `unknown`."""
    by_alias = {(field.alias or name): field for name, field in model.model_fields.items()}
    by_alias.update(model.model_fields)  # populate_by_name: snake_case keys are accepted too
    kept: dict[str, Any] = {}
    for key, value in data.items():
        field = by_alias.get(key)
        if field is None:
            unknown.append(f"{prefix}{key}")
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel) and isinstance(value, dict):
            value = _known_fields(nested, value, f"{prefix}{key}.", unknown)
        kept[key] = value
    return kept
