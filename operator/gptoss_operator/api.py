"""The `GptOssDeployment` API (`gptoss.io/v1alpha1`), modelled with pydantic v2.

These models are the only source of the CRD schema (`gptoss_operator.crd` generates it from them). Every
field carries a description so that `kubectl explain gptoss.spec` teaches the API. Cross-field rules that
the API server can check at admission are CEL rules (`x-kubernetes-validations`) declared next to the
model they constrain; rules that need the catalog (GPU memory, context that fits) live in the planner.

pydantic does not run CEL, so each rule also has a Python mirror (a `model_validator` or `field_validator`
beside it) that fails with the rule's own message at the rule's field: the offline CLI (`render -f`,
`plan -f`) and the operator then refuse what the API server refuses, in the same words. The mirrors add
no schema keywords, so the generated CRD does not change. tests/unit/api/test_models_mirror_admission.py
runs the table of invalid specs the API server is tested with through these models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import InitErrorDetails, PydanticCustomError

from gptoss_operator.catalog import MODELS, Architecture
from gptoss_runtime.plan import KvCacheDtype, ModelName, ReasoningEffort, ServingPlan

DEFAULT_GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"

# Admission rules, kept as data so tests can evaluate them with cel-python too.
CEL_GPU_COUNT_PER_MODEL: JsonDict = {
    "rule": "!has(self.gpu) || !has(self.gpu.count) || self.model != 'gpt-oss-20b' || self.gpu.count == 1",
    "message": "gpu.count: gpt-oss-20b runs on 1 GPU; set gpu.count to 1 or leave it out",
    "fieldPath": ".gpu.count",
    "reason": "FieldValueInvalid",
}
CEL_REPLICAS_WITHIN_AUTOSCALING: JsonDict = {
    "rule": (
        "!has(self.autoscaling) || !self.autoscaling.enabled || !has(self.replicas) || "
        "(self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)"
    ),
    "message": (
        "replicas: with autoscaling.enabled, replicas must lie between autoscaling.minReplicas and "
        "autoscaling.maxReplicas; set replicas to minReplicas"
    ),
    "fieldPath": ".replicas",
    "reason": "FieldValueInvalid",
}
CEL_ONE_WEIGHTS_SOURCE: JsonDict = {
    "rule": "!(has(self.huggingFace) && has(self.existingClaim))",
    "message": "weights: set either weights.huggingFace or weights.existingClaim, not both",
}
CEL_ONE_STORE_SOURCE: JsonDict = {
    "rule": "has(self.url) != has(self.urlSecretRef)",
    "message": "serving.responsesStore: set exactly one of url and urlSecretRef",
}
CEL_MIN_LE_MAX: JsonDict = {
    "rule": "self.minReplicas <= self.maxReplicas",
    "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    "fieldPath": ".minReplicas",
    "reason": "FieldValueInvalid",
}
CEL_NO_GPU_IN_RESOURCES: JsonDict = {
    "rule": (
        "(!has(self.limits) || !('nvidia.com/gpu' in self.limits)) && "
        "(!has(self.requests) || !('nvidia.com/gpu' in self.requests))"
    ),
    "message": "resources: do not set nvidia.com/gpu here; the operator sets it from gpu.count",
}
CEL_MODEL_IMMUTABLE: JsonDict = {
    "rule": "self == oldSelf",
    "message": "model is immutable: create a new GptOssDeployment for another model",
}
CEL_HPA_MIN_REPLICAS: JsonDict = {
    "rule": "self.mode != 'hpa' || self.minReplicas >= 1",
    "message": (
        "autoscaling.minReplicas: a HorizontalPodAutoscaler cannot scale to zero; set minReplicas to 1 or more, "
        "or use mode operator or keda"
    ),
    "fieldPath": ".minReplicas",
    "reason": "FieldValueInvalid",
}
CEL_KEDA_NEEDS_PROMETHEUS: JsonDict = {
    "rule": "!self.enabled || self.mode != 'keda' || has(self.prometheusAddress)",
    "message": "autoscaling.prometheusAddress: mode keda queries Prometheus; set its URL, e.g. http://prometheus:9090",
    "fieldPath": ".prometheusAddress",
    "reason": "FieldValueRequired",
}
CEL_SUB_PATH_STAYS_INSIDE: JsonDict = {
    "rule": "!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))",
    "message": "weights.existingClaim.subPath: must not contain '..' segments; give a folder inside the volume",
}
CEL_TOLERATION_KEY_OR_EXISTS: JsonDict = {
    "rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
    "message": "tolerations: a toleration without key must use operator Exists (it then matches every taint)",
    "fieldPath": ".key",
    "reason": "FieldValueRequired",
}
CEL_TOLERATION_EXISTS_NO_VALUE: JsonDict = {
    "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
    "message": "tolerations: operator Exists takes no value; remove value or use operator Equal",
    "fieldPath": ".value",
    "reason": "FieldValueInvalid",
}
CEL_TOLERATION_SECONDS_NO_EXECUTE: JsonDict = {
    "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    "message": "tolerations: tolerationSeconds applies only to effect NoExecute; set effect NoExecute or remove it",
    "fieldPath": ".tolerationSeconds",
    "reason": "FieldValueInvalid",
}

# --- GPUs and the weights cache (tests/unit/api and docs/gpus.md)
CEL_MIG_ONE_SLICE: JsonDict = {
    "rule": "!has(self.migProfile) || !has(self.count) || self.count == 1",
    "message": (
        "gpu.count: a replica runs on one MIG slice (CUDA gives a process a single MIG device); set gpu.count "
        "to 1 or leave it out, or use whole GPUs (remove gpu.migProfile)"
    ),
    "fieldPath": ".count",
    "reason": "FieldValueInvalid",
}
CEL_CACHE_NOT_READ_ONLY: JsonDict = {
    "rule": "!has(self.accessMode) || self.accessMode != 'ReadOnlyMany'",
    "message": (
        "weights.cache.accessMode: the operator downloads into the cache, which ReadOnlyMany forbids; leave it "
        "out (a volume per replica), use ReadWriteMany (one shared volume), ReadWriteOnce for one replica, or "
        "serve a volume you filled with weights.existingClaim"
    ),
    "fieldPath": ".accessMode",
    "reason": "FieldValueForbidden",
}
# Without weights.cache.accessMode each replica gets its own volume (docs/storage.md): the access mode of
# those per-pod claims, which every StorageClass offers.
PER_REPLICA_ACCESS_MODE: Final = "ReadWriteOnce"
SINGLE_NODE_ACCESS_MODES: Final = ("ReadWriteOnce", "ReadWriteOncePod")


def _cel_cache_field(root: str, field: str, default: str) -> str:
    """CEL for `<root>.weights.cache.<field>`, or the CEL literal `default` where the object leaves it out."""
    path = f"{root}.weights.cache.{field}"
    return f"(has({root}.weights) && has({root}.weights.cache) && has({path}) ? {path} : {default})"


def _cel_serves_existing_claim(root: str) -> str:
    """CEL: the weights come from the user's volume, so the operator creates and fills no cache."""
    return f"(has({root}.weights) && has({root}.weights.existingClaim))"


def _cel_cache_size(root: str) -> str:
    """CEL: the cache size asked for, or the model's default size (the catalog's)."""
    default = f"({root}.model == 'gpt-oss-20b' ? '{MODELS['gpt-oss-20b'].default_cache_size}' : "
    default += f"'{MODELS['gpt-oss-120b'].default_cache_size}')"
    return _cel_cache_field(root, "size", default)


def _cel_unchanged_cache_field(field: str, default: str) -> str:
    """CEL transition rule: a cache field keeps its value while both old and new fill the cache."""
    new, old = _cel_cache_field("self", field, default), _cel_cache_field("oldSelf", field, default)
    return f"{_cel_serves_existing_claim('oldSelf')} || {_cel_serves_existing_claim('self')} || {new} == {old}"


_CEL_ACCESS_MODE = _cel_cache_field("self", "accessMode", "''")
CEL_SINGLE_NODE_CACHE_ONE_REPLICA: JsonDict = {
    "rule": (
        f"{_cel_serves_existing_claim('self')} || !({_CEL_ACCESS_MODE} in {list(SINGLE_NODE_ACCESS_MODES)}) || "
        "((!has(self.replicas) || self.replicas <= 1) && "
        "(!has(self.autoscaling) || !self.autoscaling.enabled || self.autoscaling.maxReplicas <= 1))"
    ),
    "message": (
        "replicas: a ReadWriteOnce or ReadWriteOncePod weights cache attaches to one node, so it serves one "
        "replica; set replicas (and autoscaling.maxReplicas) to 1, weights.cache.accessMode to ReadWriteMany, "
        "or leave weights.cache.accessMode out for a volume per replica"
    ),
    "fieldPath": ".replicas",
    "reason": "FieldValueInvalid",
}
# Setting or removing the access mode swaps the volumes per replica for a shared claim (or back), which
# creates a new claim; only a change between two modes would have to change a claim.
_CEL_OLD_ACCESS_MODE = _cel_cache_field("oldSelf", "accessMode", "''")
_CEL_ACCESS_MODE_UNCHANGED = _cel_unchanged_cache_field("accessMode", "''")
CEL_CACHE_ACCESS_MODE_IMMUTABLE: JsonDict = {
    "rule": f"{_CEL_OLD_ACCESS_MODE} == '' || {_CEL_ACCESS_MODE} == '' || ({_CEL_ACCESS_MODE_UNCHANGED})",
    "message": (
        "weights.cache.accessMode: immutable once the shared cache exists (a PersistentVolumeClaim's access "
        "modes cannot change); keep it, remove it (a volume per replica), or create a new GptOssDeployment"
    ),
    "fieldPath": ".weights.cache.accessMode",
    "reason": "FieldValueForbidden",
}
CEL_CACHE_STORAGE_CLASS_IMMUTABLE: JsonDict = {
    "rule": _cel_unchanged_cache_field("storageClassName", "''"),
    "message": (
        "weights.cache.storageClassName: immutable once the cache exists (a PersistentVolumeClaim keeps its "
        "class); keep it, or create a new GptOssDeployment"
    ),
    "fieldPath": ".weights.cache.storageClassName",
    "reason": "FieldValueForbidden",
}
# quantity() is Kubernetes' CEL quantity library (new expressions may use it from 1.29 on).
CEL_CACHE_SIZE_NO_SHRINK: JsonDict = {
    "rule": (
        f"{_cel_serves_existing_claim('oldSelf')} || {_cel_serves_existing_claim('self')} || "
        f"!quantity({_cel_cache_size('self')}).isLessThan(quantity({_cel_cache_size('oldSelf')}))"
    ),
    "message": (
        "weights.cache.size: cannot shrink (a PersistentVolumeClaim only grows; left out, it is the model's "
        "default); keep it or set a larger size"
    ),
    "fieldPath": ".weights.cache.size",
    "reason": "FieldValueForbidden",
}
CACHE_TRANSITION_RULES: Final = (
    CEL_CACHE_ACCESS_MODE_IMMUTABLE,
    CEL_CACHE_STORAGE_CLASS_IMMUTABLE,
    CEL_CACHE_SIZE_NO_SHRINK,
)

GPU_RESOURCE: Final = "nvidia.com/gpu"  # the extended resource name CEL_NO_GPU_IN_RESOURCES refuses
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
MIG_PROFILE_PATTERN = r"^[1-8]g\.[1-9][0-9]*gb$"
MAX_GPU_NODE_SELECTOR_ENTRIES = 16
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Bounds on maps and lists keep objects small and the API server's CEL cost estimate finite.
MAX_MAP_ENTRIES = 64
MAX_TOLERATIONS = 32
MAX_PULL_SECRETS = 16
MAX_ALLOWED_NAMESPACES = 64

# metadata.name, as the CRD bounds it (gptoss_operator.crd: MAX_NAME_LENGTH and CEL_NAME_IS_DNS_LABEL; a
# test keeps the two in step). Children append suffixes to the name, and the Service needs a DNS-1035 label.
MAX_NAME_LENGTH: Final = 52
NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MESSAGE: Final = (
    "metadata.name: must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter), "
    "because it names the Service and the other children"
)
NAME_LENGTH_MESSAGE: Final = (
    f"metadata.name: must be at most {MAX_NAME_LENGTH} characters, because the children's names add suffixes "
    "to it; choose a shorter name"
)

# ------------------------------------------------------------------------------ mirrors of the CEL rules
ADMISSION_ERROR_TYPE: Final = "admission_rule"
Location = tuple[str | int, ...]


def _rule_error(message: str, location: Location, value: Any) -> InitErrorDetails:
    """One failed admission rule as a pydantic error: the message verbatim, at `location`."""
    return InitErrorDetails(
        type=PydanticCustomError(ADMISSION_ERROR_TYPE, "{message}", {"message": message}),
        loc=location,
        input=value,
    )


def _field_path_location(rule: JsonDict) -> Location:
    """The rule's `fieldPath` (`.gpu.count`) as a pydantic location (`("gpu", "count")`)."""
    field_path = str(rule.get("fieldPath", ""))
    return tuple(part for part in field_path.split(".") if part)


def enforce_rules(model_name: str, checks: Iterable[tuple[JsonDict, bool, Any]]) -> None:
    """Raise one ValidationError listing every rule whose check is False.

    Each check is (CEL rule, whether it holds, the offending value). The error sits at the rule's
    `fieldPath` under the validated model, as the API server reports it.
    """
    errors = [
        _rule_error(str(rule["message"]), _field_path_location(rule), value)
        for rule, holds, value in checks
        if not holds
    ]
    if errors:
        raise ValidationError.from_exception_data(model_name, errors)


def _duplicate_errors(field_alias: str, items: Sequence[Any], extra: JsonDict) -> list[InitErrorDetails]:
    """Errors for repeated entries of a list the CRD types as a set or as a map keyed by some fields."""
    list_type = extra.get("x-kubernetes-list-type")
    keys = extra.get("x-kubernetes-list-map-keys")
    map_keys = [str(key) for key in keys] if isinstance(keys, list) else []
    if list_type not in ("set", "map") or (list_type == "map" and not map_keys):
        return []
    seen: set[Any] = set()
    errors = []
    for index, item in enumerate(items):
        identity = item if list_type == "set" else tuple(_wire_value(item, key) for key in map_keys)
        if identity in seen:
            errors.append(_rule_error(_duplicate_message(identity, map_keys), (field_alias, index), item))
        seen.add(identity)
    return errors


def _wire_value(item: Any, key: str) -> Any:
    """The value of the camelCase wire field `key` of a list entry (a model)."""
    for attribute, field in type(item).model_fields.items():
        if (field.alias or attribute) == key:
            return getattr(item, attribute)
    raise KeyError(key)


def _duplicate_message(identity: Any, map_keys: Sequence[str]) -> str:
    if not map_keys:
        return f'Duplicate value: "{identity}"; list each value once'
    shown = ", ".join(f'{key} "{value}"' for key, value in zip(map_keys, identity, strict=True))
    return f"Duplicate value: {shown}; entries are keyed by {', '.join(map_keys)}, list each once"


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True)

    @model_validator(mode="after")
    def _lists_have_unique_entries(self) -> Self:
        """The API server refuses repeated entries of `x-kubernetes-list-type` set and map lists."""
        errors: list[InitErrorDetails] = []
        for attribute, field in type(self).model_fields.items():
            extra = field.json_schema_extra
            value = getattr(self, attribute)
            if isinstance(extra, dict) and isinstance(value, list):
                errors += _duplicate_errors(field.alias or attribute, value, extra)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


# ---------------------------------------------------------------------------------------------- weights
class SecretKeyRef(ApiModel):
    """A key of a Secret in the deployment's namespace."""

    name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)
    key: str = Field(description="Key within the Secret.", min_length=1, max_length=253)


class HuggingFaceSource(ApiModel):
    """Download the weights from a Hugging Face repository into the cache volume."""

    repo: str | None = Field(
        default=None,
        description="Repository id, e.g. openai/gpt-oss-20b. Defaults to the official repository of the model.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=200,
    )
    revision: str = Field(
        default="main",
        description="Git revision to download. Pin a commit hash in production so replicas serve identical weights.",
        min_length=1,
        max_length=128,
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Hugging Face access token (gated or private repositories)."
    )
    endpoint: str | None = Field(
        default=None,
        description="Hub endpoint URL for a mirror or proxy (HF_ENDPOINT); defaults to the public hub.",
        pattern=r"^https?://",
        max_length=500,
    )


class ExistingClaim(ApiModel):
    """Serve weights already present on a PersistentVolumeClaim (no download)."""

    claim_name: str = Field(description="Name of the PersistentVolumeClaim.", pattern=K8S_NAME_PATTERN, max_length=253)
    sub_path: str = Field(
        default="",
        description=(
            "Folder within the volume that holds config.json and the safetensors files "
            "(relative, without '..'); empty means the volume's root."
        ),
        pattern=r"^[^/].*$|^$",
        max_length=500,
        json_schema_extra={"x-kubernetes-validations": [CEL_SUB_PATH_STAYS_INSIDE]},
    )

    @field_validator("sub_path")
    @classmethod
    def _sub_path_stays_inside(cls, sub_path: str) -> str:
        escapes = sub_path == ".." or sub_path.startswith("../") or sub_path.endswith("/..") or "/../" in sub_path
        if escapes:
            raise PydanticCustomError(
                ADMISSION_ERROR_TYPE, "{message}", {"message": str(CEL_SUB_PATH_STAYS_INSIDE["message"])}
            )
        return sub_path


class WeightCache(ApiModel):
    """The PersistentVolumeClaim the operator creates to cache downloaded weights.

    Its access mode and storage class cannot change once it exists, and its size can only grow
    (transition rules on the spec: a PersistentVolumeClaim refuses those changes).
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CEL_CACHE_NOT_READ_ONLY]})

    storage_class_name: str | None = Field(
        default=None,
        description="StorageClass of the cache; the cluster default when left out. Immutable.",
        max_length=253,
    )
    size: str | None = Field(
        default=None,
        description=(
            "Requested size, e.g. 100Gi. Defaults per model: 40Gi for gpt-oss-20b, 150Gi for gpt-oss-120b. "
            "May grow (where the StorageClass allows expansion), never shrink."
        ),
        pattern=QUANTITY_PATTERN,
        max_length=32,
    )
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"] | None = Field(
        default=None,
        description=(
            "Left out (the default): every replica gets its own ReadWriteOnce volume, created with its pod and "
            "filled by the pod's download init container; works with any StorageClass. Set: one shared "
            "PersistentVolumeClaim with this access mode, filled once by a download Job. ReadWriteMany lets "
            "replicas on many nodes share it; ReadWriteOnce and ReadWriteOncePod serve one replica only. "
            "ReadOnlyMany is refused: the operator writes the download. Cannot change from one mode to another."
        ),
    )

    @model_validator(mode="after")
    def _writable(self) -> Self:
        read_only = self.access_mode == "ReadOnlyMany"
        enforce_rules(type(self).__name__, [(CEL_CACHE_NOT_READ_ONLY, not read_only, self.access_mode)])
        return self


class Weights(ApiModel):
    """Where the model weights come from."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CEL_ONE_WEIGHTS_SOURCE]})

    hugging_face: HuggingFaceSource | None = Field(
        default=None, description="Download from Hugging Face (the default when no source is given)."
    )
    existing_claim: ExistingClaim | None = Field(
        default=None, description="Use weights already on a PersistentVolumeClaim instead of downloading."
    )
    cache: WeightCache = Field(default_factory=WeightCache, description="The cache volume for downloaded weights.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        both = self.hugging_face is not None and self.existing_claim is not None
        enforce_rules(type(self).__name__, [(CEL_ONE_WEIGHTS_SOURCE, not both, self.existing_claim)])
        return self


# -------------------------------------------------------------------------------------------------- GPU
class GpuSpec(ApiModel):
    """Which GPUs a replica runs on."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CEL_MIG_ONE_SLICE]})

    product: str = Field(
        default=DEFAULT_GPU_PRODUCT,
        description=(
            "GPU product, matched against the GPU Feature Discovery node label nvidia.com/gpu.product, e.g. "
            "NVIDIA-H100-80GB-HBM3, NVIDIA-H100-PCIe, NVIDIA-H100-NVL, NVIDIA-H200, NVIDIA-H200-NVL, NVIDIA-H800, "
            "NVIDIA-H20, NVIDIA-B200, NVIDIA-GB200 (docs/gpus.md). Another product needs memoryGiB."
        ),
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    count: int | None = Field(
        default=None,
        description=(
            "GPUs per replica (1 or 2). Left out, the planner chooses: 1 for gpt-oss-20b; for gpt-oss-120b "
            "1 when the GPU has room for a useful KV cache, else 2 (TP2/EP2)."
        ),
        ge=1,
        le=2,
    )
    memory_gib: float | None = Field(
        default=None,
        alias="memoryGiB",
        description=(
            "Memory of one GPU in GiB (of the MIG slice with migProfile), as CUDA sees it (nvidia-smi's total). "
            "Required for a product the catalog lacks; overrides the catalog's figure otherwise."
        ),
        ge=8,
        le=1024,
    )
    architecture: Architecture | None = Field(
        default=None,
        description=(
            "GPU architecture, which picks TensorRT-LLM's MoE kernels: hopper (TRITON) or blackwell (TRTLLM). "
            "Known from the catalog; for another product it defaults to hopper."
        ),
    )
    mig_profile: str | None = Field(
        default=None,
        description=(
            "Run each replica on one MIG slice of this profile, e.g. 3g.40gb on an H100 80GB or 4g.71gb on an "
            "H200: the pods request nvidia.com/mig-<profile> (the device plugin's mixed strategy) and are planned "
            "from the slice's memory. gpt-oss-20b fits a slice of about 20 GB or more."
        ),
        pattern=MIG_PROFILE_PATTERN,
        max_length=16,
    )
    node_selector: dict[str, str] | None = Field(
        default=None,
        description=(
            "Node labels that identify nodes with this GPU, used instead of the GPU Feature Discovery label "
            "nvidia.com/gpu.product where GFD does not run, e.g. cloud.google.com/gke-accelerator: nvidia-h100-80gb."
        ),
        max_length=MAX_GPU_NODE_SELECTOR_ENTRIES,
    )

    @model_validator(mode="after")
    def _one_slice(self) -> Self:
        one_slice = self.mig_profile is None or self.count in (None, 1)
        enforce_rules(type(self).__name__, [(CEL_MIG_ONE_SLICE, one_slice, self.count)])
        return self


# ----------------------------------------------------------------------------------------------- engine
class EngineSpec(ApiModel):
    """TensorRT-LLM settings. Each one left out is resolved by the planner from NVIDIA's published defaults."""

    max_seq_len: int | None = Field(
        default=None, description="Longest prompt plus output in tokens (gpt-oss supports 131072).", ge=1024, le=131072
    )
    max_batch_size: int | None = Field(
        default=None, description="Most sequences scheduled together in one step.", ge=1, le=2048
    )
    max_num_tokens: int | None = Field(
        default=None, description="Most tokens (prefill and decode) processed in one step.", ge=256, le=131072
    )
    kv_cache_memory_fraction: float | None = Field(
        default=None,
        description="Share of the GPU memory left after the weights that the KV cache may take (0.1 to 0.95).",
        ge=0.1,
        le=0.95,
    )
    kv_cache_dtype: KvCacheDtype = Field(
        default="auto", description="KV cache element type: auto (BF16, as the model), bf16, or fp8 (halves KV memory)."
    )
    moe_backend: Literal["auto", "TRITON", "CUTLASS", "TRTLLM"] = Field(
        default="auto",
        description=(
            "Mixture-of-experts kernels. auto picks the GPU architecture's: TRITON (the MXFP4 kernels for Hopper) "
            "or TRTLLM (Blackwell only); CUTLASS runs on both."
        ),
    )
    attention_data_parallel: bool | None = Field(
        default=None,
        description="Attention data parallelism across the replica's GPUs; helps only at very high concurrency.",
    )


class ResponsesStore(ApiModel):
    """Where the gateways keep stored responses: a Redis-compatible server (its URL inline or in a Secret)."""

    url: str | None = Field(
        default=None,
        pattern=r"^(redis|rediss|unix)://",
        max_length=2048,
        description="redis://host:6379/0 (rediss:// for TLS). Put a URL holding a password in urlSecretRef.",
    )
    url_secret_ref: SecretKeyRef | None = Field(default=None, description="A Secret key holding the URL.")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CEL_ONE_STORE_SOURCE]})

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        exactly_one = (self.url is None) != (self.url_secret_ref is None)
        enforce_rules(type(self).__name__, [(CEL_ONE_STORE_SOURCE, exactly_one, self.url)])
        return self


class ServingSpec(ApiModel):
    """How requests are served."""

    reasoning_effort: ReasoningEffort = Field(
        default="medium", description="Default reasoning effort when a request does not set one."
    )
    openai_endpoint: bool = Field(default=True, description="Run the OpenAI-compatible HTTP gateway beside Triton.")
    api_keys_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=(
            "Name of a Secret in the deployment's namespace holding the API keys (each key of the Secret one "
            "API key, or several, one per line). When set, the gateway answers 401 to a request without "
            "`Authorization: Bearer <a key>`. The gateway re-reads the keys when the kubelet updates the "
            "mounted Secret, so keys rotate without a restart. Left out: no authentication."
        ),
    )
    responses_store: ResponsesStore | None = Field(
        default=None,
        description=(
            "A Redis-compatible server shared by every replica for the Responses API's stored responses "
            "(store, previous_response_id, GET/DELETE /v1/responses/{id}); they then survive restarts and "
            "work across replicas. Without it each gateway keeps its own responses in memory."
        ),
    )


# ------------------------------------------------------------------------------------------ autoscaling
class AutoscalingTargets(ApiModel):
    """Per-replica targets the autoscaler tracks; the busiest signal decides."""

    requests_waiting_per_replica: float | None = Field(
        default=4.0, description="Requests queued per replica before scaling up.", ge=0
    )
    requests_running_per_replica: float | None = Field(
        default=None, description="Requests generating per replica; left out, not used.", gt=0
    )
    kv_cache_utilization: float | None = Field(
        default=0.85, description="KV cache utilization (0 to 1) per replica.", gt=0, le=1
    )
    time_to_first_token_seconds: float | None = Field(
        default=None, description="Time to first token target in seconds; left out, not used.", gt=0
    )


class ScalingBehavior(ApiModel):
    """How fast replicas are added or removed."""

    stabilization_window_seconds: int = Field(
        description="Recommendations over this window are considered before acting, to avoid flapping.",
        ge=0,
        le=3600,
    )
    max_step_replicas: int = Field(description="Most replicas added or removed in one decision.", ge=1, le=100)


class AutoscalingSpec(ApiModel):
    """Replica autoscaling on LLM signals, capped by the GPUs the cluster has free."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [CEL_MIN_LE_MAX, CEL_HPA_MIN_REPLICAS, CEL_KEDA_NEEDS_PROMETHEUS]
        }
    )

    enabled: bool = Field(default=False, description="Turn autoscaling on.")
    mode: Literal["operator", "hpa", "keda"] = Field(
        default="operator",
        description=(
            "operator: the operator's own autoscaler; hpa: a HorizontalPodAutoscaler on Prometheus Adapter "
            "metrics; keda: a KEDA ScaledObject with a Prometheus trigger."
        ),
    )
    min_replicas: int = Field(default=1, description="Fewest replicas.", ge=0, le=1000)
    max_replicas: int = Field(default=4, description="Most replicas.", ge=1, le=1000)
    tolerance: float = Field(
        default=0.1, description="Relative deviation from the target that causes no change.", ge=0, le=1
    )
    targets: AutoscalingTargets = Field(default_factory=AutoscalingTargets, description="Signals and targets.")
    scale_up: ScalingBehavior = Field(
        default_factory=lambda: ScalingBehavior(stabilization_window_seconds=0, max_step_replicas=2),
        description="Scale-up behaviour.",
    )
    scale_down: ScalingBehavior = Field(
        default_factory=lambda: ScalingBehavior(stabilization_window_seconds=300, max_step_replicas=1),
        description="Scale-down behaviour.",
    )
    prometheus_address: str | None = Field(
        default=None,
        description="Prometheus URL for mode keda (e.g. http://prometheus.monitoring:9090).",
        pattern=r"^https?://",
        max_length=500,
    )

    @model_validator(mode="after")
    def _bounds_and_mode_fit(self) -> Self:
        keda_without_prometheus = self.enabled and self.mode == "keda" and self.prometheus_address is None
        enforce_rules(
            type(self).__name__,
            [
                (CEL_MIN_LE_MAX, self.min_replicas <= self.max_replicas, self.min_replicas),
                (CEL_HPA_MIN_REPLICAS, self.mode != "hpa" or self.min_replicas >= 1, self.min_replicas),
                (CEL_KEDA_NEEDS_PROMETHEUS, not keda_without_prometheus, self.prometheus_address),
            ],
        )
        return self


# -------------------------------------------------------------------------------------- pod placement
class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                CEL_TOLERATION_KEY_OR_EXISTS,
                CEL_TOLERATION_EXISTS_NO_VALUE,
                CEL_TOLERATION_SECONDS_NO_EXECUTE,
            ]
        }
    )

    key: str | None = Field(
        default=None, description="Taint key; empty with operator Exists matches all taints.", max_length=253
    )
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default).")
    value: str | None = Field(default=None, description="Taint value for operator Equal.", max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated, in seconds (effect NoExecute only)."
    )

    @model_validator(mode="after")
    def _fields_agree(self) -> Self:
        exists = self.operator == "Exists"
        enforce_rules(
            type(self).__name__,
            [
                (CEL_TOLERATION_KEY_OR_EXISTS, bool(self.key) or exists, self.key),
                (CEL_TOLERATION_EXISTS_NO_VALUE, not exists or not self.value, self.value),
                (
                    CEL_TOLERATION_SECONDS_NO_EXECUTE,
                    self.toleration_seconds is None or self.effect == "NoExecute",
                    self.toleration_seconds,
                ),
            ],
        )
        return self


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(description="Name of the referenced object.", min_length=1, max_length=253)


class ResourceRequirements(ApiModel):
    """CPU and memory for the server container; GPUs come from gpu.count."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CEL_NO_GPU_IN_RESOURCES]})

    requests: dict[str, str] | None = Field(
        default=None, description="Minimum resources, e.g. cpu: '8' (values are quoted strings).", max_length=16
    )
    limits: dict[str, str] | None = Field(
        default=None, description="Maximum resources, e.g. memory: 128Gi (values are quoted strings).", max_length=16
    )

    @model_validator(mode="after")
    def _no_gpus(self) -> Self:
        asks_for_gpus = any(GPU_RESOURCE in (amounts or {}) for amounts in (self.limits, self.requests))
        enforce_rules(type(self).__name__, [(CEL_NO_GPU_IN_RESOURCES, not asks_for_gpus, GPU_RESOURCE)])
        return self


class ServiceSpec(ApiModel):
    """The Service in front of the replicas."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Service type.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations for the Service.", max_length=MAX_MAP_ENTRIES
    )


class MonitoringSpec(ApiModel):
    """How Prometheus finds the replicas' metrics."""

    pod_monitor: bool = Field(
        default=True, description="Create a PodMonitor where the Prometheus Operator's CRDs exist."
    )
    scrape_annotations: bool = Field(
        default=True, description="Add prometheus.io/scrape annotations to the pods for annotation-based scraping."
    )


class NetworkPolicySpec(ApiModel):
    """Ingress restrictions for the replicas."""

    enabled: bool = Field(default=True, description="Create a NetworkPolicy for the replicas.")
    allowed_namespaces: list[Annotated[str, Field(pattern=K8S_NAME_PATTERN, max_length=63)]] = Field(
        default_factory=list,
        max_length=MAX_ALLOWED_NAMESPACES,
        description=(
            "Namespaces (by name) whose pods may call the model. The deployment's own namespace is always "
            "allowed; empty means only it."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    allow_all: bool = Field(
        default=False, description="Allow the serving ports from anywhere (the metrics port stays open)."
    )


class DisruptionBudgetSpec(ApiModel):
    """The PodDisruptionBudget that protects replicas during node drains."""

    enabled: bool = Field(default=True, description="Create a PodDisruptionBudget when there is more than one replica.")
    max_unavailable: int = Field(default=1, description="Replicas a voluntary disruption may take down.", ge=1)


# ---------------------------------------------------------------------------------------------- updates
OperatorUpdates = Literal["Manual", "Automatic"]


class UpdatePolicy(ApiModel):
    """What a new operator version may do to running servers (see docs/upgrades.md)."""

    operator_updates: OperatorUpdates = Field(
        default="Manual",
        description=(
            "Manual: a new operator version (a new default image, new pod template) does not restart running "
            "pods; the condition UpdateAvailable says what waits, and the annotation gptoss.io/apply-update "
            "(any new value) applies it once. Automatic: applied as soon as the operator's rollout throttle "
            "(operator.maxConcurrentRollouts) admits this deployment. Edits of the spec roll the pods either way."
        ),
    )


# ------------------------------------------------------------------------------------------------- spec
class GptOssDeploymentSpec(ApiModel):
    """The desired state of a gpt-oss model server."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                CEL_GPU_COUNT_PER_MODEL,
                CEL_REPLICAS_WITHIN_AUTOSCALING,
                CEL_SINGLE_NODE_CACHE_ONE_REPLICA,
                *CACHE_TRANSITION_RULES,
            ]
        }
    )

    model: ModelName = Field(
        description="The model to serve: gpt-oss-20b (one GPU) or gpt-oss-120b (one or two GPUs).",
        json_schema_extra={"x-kubernetes-validations": [CEL_MODEL_IMMUTABLE]},
    )
    weights: Weights = Field(default_factory=Weights, description="Where the weights come from and are cached.")
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPU product and GPUs per replica.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="TensorRT-LLM engine settings.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Request serving settings.")
    replicas: int = Field(
        default=1,
        description="Number of replicas. With autoscaling enabled, the autoscaler sets it within its bounds.",
        ge=0,
        le=1000,
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description="Autoscaling settings.")
    image: str | None = Field(
        default=None,
        description=(
            "Server image (Triton with TensorRT-LLM and gpt-oss-operator's runtime); "
            "the operator's default when left out."
        ),
        max_length=500,
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the server containers."
    )
    update_policy: UpdatePolicy = Field(
        default_factory=UpdatePolicy, description="Whether operator upgrades may restart the running pods."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        description="Secrets for pulling the image.",
        max_length=MAX_PULL_SECRETS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory of the server container (GPUs come from gpu.count).",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels the pods require.", max_length=MAX_MAP_ENTRIES
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Extra tolerations; the nvidia.com/gpu taint is always tolerated.",
        max_length=MAX_TOLERATIONS,
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Extra pod affinity rules (core/v1 Affinity); GPU product node affinity is added by the operator.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.", max_length=253)
    runtime_class_name: str | None = Field(
        default=None, description="RuntimeClass of the pods (e.g. nvidia).", max_length=253
    )
    startup_timeout_seconds: int | None = Field(
        default=None,
        ge=60,
        le=86400,
        description=(
            "How long a server may take to load its weights and warm up before the kubelet restarts it (the "
            "startup probe's budget). Default: the model's weights read at a conservative 50 MiB/s plus 15 "
            "minutes of engine warm-up (about 20 minutes for gpt-oss-20b, 37 for gpt-oss-120b); raise it for "
            "slower storage. The Deployment's progress deadline grows with it."
        ),
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on the pods.", max_length=MAX_MAP_ENTRIES
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on the pods.", max_length=MAX_MAP_ENTRIES
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The Service in front of the replicas.")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description="Prometheus scraping.")
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec, description="Ingress NetworkPolicy.")
    disruption_budget: DisruptionBudgetSpec = Field(
        default_factory=DisruptionBudgetSpec, description="PodDisruptionBudget."
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        autoscaling = self.autoscaling
        replicas_in_bounds = autoscaling.min_replicas <= self.replicas <= autoscaling.max_replicas
        enforce_rules(
            type(self).__name__,
            [
                (CEL_GPU_COUNT_PER_MODEL, self.model != "gpt-oss-20b" or self.gpu.count in (None, 1), self.gpu.count),
                (CEL_REPLICAS_WITHIN_AUTOSCALING, not autoscaling.enabled or replicas_in_bounds, self.replicas),
                (CEL_SINGLE_NODE_CACHE_ONE_REPLICA, self._cache_serves_every_replica(), self.replicas),
            ],
        )
        return self

    def _cache_serves_every_replica(self) -> bool:
        if not self.shares_cache or self.weights.cache.access_mode not in SINGLE_NODE_ACCESS_MODES:
            return True
        most_replicas = max(self.replicas, self.autoscaling.max_replicas if self.autoscaling.enabled else 0)
        return most_replicas <= 1

    @property
    def fills_cache(self) -> bool:
        """The operator downloads the weights into its cache volume (no existing claim)."""
        return self.weights.existing_claim is None

    @property
    def shares_cache(self) -> bool:
        """One PersistentVolumeClaim, filled by a Job, serves every replica (weights.cache.accessMode is set);
        otherwise each replica downloads into a volume of its own."""
        return self.fills_cache and self.weights.cache.access_mode is not None

    @property
    def cache_size(self) -> str:
        """The cache volume's size: the spec's, or the model's default."""
        return self.weights.cache.size or MODELS[self.model].default_cache_size


# ----------------------------------------------------------------------------------------------- status
class Condition(ApiModel):
    """A condition in the standard Kubernetes shape (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why.")
    message: str = Field(default="", description="A human readable explanation.")
    observed_generation: int | None = Field(default=None, description="The spec generation it was computed for.")
    last_transition_time: str = Field(description="When the status last flipped (RFC 3339).")


class Endpoints(ApiModel):
    """In-cluster addresses of the deployment."""

    openai: str | None = Field(default=None, description="OpenAI-compatible base URL (…/v1).")
    http: str | None = Field(default=None, description="Triton HTTP (KServe v2) address.")
    grpc: str | None = Field(default=None, description="Triton gRPC address.")
    metrics: str | None = Field(default=None, description="Prometheus metrics address of the pods.")


class AutoscalingDecision(ApiModel):
    """One autoscaler decision."""

    time: str = Field(description="When it was made (RFC 3339).")
    from_replicas: int = Field(description="Replicas before.")
    to_replicas: int = Field(description="Replicas decided.")
    reason: str = Field(description="Why, in words.")
    signals: dict[str, float] = Field(default_factory=dict, description="Signal values it was based on.")


MAX_AUTOSCALING_HISTORY = 512


class AutoscalingHistory(ApiModel):
    """The operator autoscaler's memory (stabilization windows, step limits), kept across operator restarts."""

    recommendations: list[list[float]] = Field(
        default_factory=list,
        description="[unix time, replicas] of recent recommendations, oldest first (runs of one value: the latest).",
        max_length=MAX_AUTOSCALING_HISTORY,
    )
    scale_events: list[list[float]] = Field(
        default_factory=list,
        description="[unix time, from replicas, to replicas] of recent replica changes, oldest first.",
        max_length=MAX_AUTOSCALING_HISTORY,
    )
    started: float | None = Field(default=None, description="Unix time of the first recorded recommendation.")


class AutoscalingStatus(ApiModel):
    """What the autoscaler last saw and did."""

    mode: str | None = Field(default=None, description="The active autoscaling mode.")
    last_scale_time: str | None = Field(default=None, description="When replicas last changed (RFC 3339).")
    recommendation: int | None = Field(default=None, description="Replicas the signals ask for before capping.")
    schedulable_replicas: int | None = Field(
        default=None, description="Replicas that fit on free GPUs matching the deployment."
    )
    decisions: list[AutoscalingDecision] = Field(
        default_factory=list, description="The most recent decisions, newest last (bounded)."
    )
    history: AutoscalingHistory | None = Field(
        default=None, description="Internal: the operator autoscaler's recent recommendations, for restarts."
    )


class EngineStatus(ApiModel):
    """Which engine serves: TensorRT-LLM, or a CPU stand-in the cluster's operator chose."""

    name: str = Field(description="trtllm, or reference (the CPU reference engine).")
    stand_in: bool = Field(
        description="True when the CPU engine stands in for TensorRT-LLM (operator setting GPTOSS_ENGINE_STAND_IN)."
    )


class RuntimeStatus(ApiModel):
    """What the server pods were rendered with, recorded once per CR so that operator upgrades keep it."""

    image: str | None = Field(default=None, description="The server image the pods run.")
    template_revision: int | None = Field(
        default=None, description="Revision of the operator's pod template the pods were rendered with."
    )
    operator_version: str | None = Field(default=None, description="The operator version that resolved them.")
    applied_update: str | None = Field(
        default=None, description="The last gptoss.io/apply-update annotation value that was applied."
    )


class WeightsStatus(ApiModel):
    """Progress of the weights download, as the fetcher last reported it (present while it runs)."""

    bytes_done: int | None = Field(default=None, description="Bytes downloaded so far.")
    bytes_total: int | None = Field(default=None, description="Bytes the download needs in all, once known.")
    bytes_per_second: int | None = Field(default=None, description="Recent download rate.")
    eta_seconds: int | None = Field(default=None, description="Seconds left at the recent rate.")
    replicas_downloading: int | None = Field(
        default=None,
        description="With a volume per replica: replicas whose fetch init container is downloading; the figures "
        "above are then those of the replica furthest behind.",
    )


class GptOssDeploymentStatus(ApiModel):
    """The observed state, written by the operator."""

    phase: str | None = Field(default=None, description="Pending, Progressing, Ready, Degraded or Failed.")
    observed_generation: int | None = Field(default=None, description="The spec generation last reconciled.")
    replicas: int | None = Field(default=None, description="Pods of the server (all generations).")
    ready_replicas: int | None = Field(default=None, description="Ready pods of the current generation.")
    desired_replicas: int | None = Field(default=None, description="Replicas asked for (spec or autoscaler).")
    selector: str | None = Field(default=None, description="Label selector of the server pods (scale subresource).")
    gpus_per_replica: int | None = Field(default=None, description="GPUs each replica uses.")
    gpus: int | None = Field(default=None, description="GPUs asked for by all desired replicas.")
    plan: ServingPlan | None = Field(default=None, description="The resolved serving plan.")
    endpoints: Endpoints | None = Field(default=None, description="Where to reach the model.")
    engine: EngineStatus | None = Field(default=None, description="The engine the server pods run.")
    weights: WeightsStatus | None = Field(default=None, description="Progress of the weights download.")
    runtime: RuntimeStatus | None = Field(default=None, description="What the server pods were rendered with.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    autoscaling: AutoscalingStatus | None = Field(default=None, description="Autoscaler state.")


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_is_a_short_dns_label(cls, name: str) -> str:
        """The CRD's bounds on metadata.name (maxLength and CEL_NAME_IS_DNS_LABEL), checked offline too."""
        if len(name) > MAX_NAME_LENGTH:
            raise PydanticCustomError(ADMISSION_ERROR_TYPE, "{message}", {"message": NAME_LENGTH_MESSAGE})
        if not re.fullmatch(NAME_PATTERN, name):
            raise PydanticCustomError(ADMISSION_ERROR_TYPE, "{message}", {"message": NAME_MESSAGE})
        return name


class GptOssDeployment(BaseModel):
    """A gpt-oss model server."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["gptoss.io/v1alpha1"] = Field(default="gptoss.io/v1alpha1", alias="apiVersion")
    kind: Literal["GptOssDeployment"] = "GptOssDeployment"
    metadata: ObjectMeta
    spec: GptOssDeploymentSpec
    status: GptOssDeploymentStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


def validate_update(old: GptOssDeployment, new: GptOssDeployment) -> None:
    """Mirror of the transition rules (`oldSelf`) the API server checks when `old` is replaced by `new`."""
    model_kept = (CEL_MODEL_IMMUTABLE | {"fieldPath": ".spec.model"}, new.spec.model == old.spec.model, new.spec.model)
    enforce_rules(type(new).__name__, [model_kept, *_cache_transition_checks(old.spec, new.spec)])


def _cache_transition_checks(old: GptOssDeploymentSpec, new: GptOssDeploymentSpec) -> list[tuple[JsonDict, bool, Any]]:
    """The cache's transition rules as (rule at its spec path, whether it holds, the new value)."""
    if not (old.fills_cache and new.fills_cache):
        return []  # a new cache volume, or none: nothing to keep
    old_cache, new_cache = old.weights.cache, new.weights.cache
    grows_or_keeps = parse_quantity(new.cache_size) >= parse_quantity(old.cache_size)
    checks: list[tuple[JsonDict, bool, Any]] = [
        (CEL_CACHE_ACCESS_MODE_IMMUTABLE, _access_mode_kept(old_cache, new_cache), new_cache.access_mode),
        (
            CEL_CACHE_STORAGE_CLASS_IMMUTABLE,
            new_cache.storage_class_name == old_cache.storage_class_name,
            new_cache.storage_class_name,
        ),
        (CEL_CACHE_SIZE_NO_SHRINK, grows_or_keeps, new.cache_size),
    ]
    return [(rule | {"fieldPath": f".spec{rule['fieldPath']}"}, holds, value) for rule, holds, value in checks]


def _access_mode_kept(old: WeightCache, new: WeightCache) -> bool:
    """A shared claim keeps its access mode; switching to or from volumes per replica makes a new claim."""
    return old.access_mode is None or new.access_mode is None or new.access_mode == old.access_mode


_QUANTITY_SUFFIXES: Final[dict[str, int]] = {
    "": 1,
    **{suffix: 1024 ** (power + 1) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi"))},
    **{suffix: 1000 ** (power + 1) for power, suffix in enumerate(("k", "M", "G", "T", "P"))},
}


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes quantity of the form QUANTITY_PATTERN admits (e.g. 40Gi, 1.5T), in base units."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", text)
    if match is None or match.group(2) not in _QUANTITY_SUFFIXES:
        raise ValueError(f"{text!r} is not a quantity such as 40Gi or 1.5T")
    return Fraction(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2)]
