"""Turns a GptOssDeployment spec into a `ServingPlan`, or a `PlanError` that names the field and the fix.

Pure: the spec, the catalog and the operator settings in, a plan out.

Memory model (per replica; every figure is an estimate that errs on the side of fitting):

    GPU memory (nvidia.com/gpu.memory x GPUs)
      - loaded weights (catalog; MXFP4 experts + BF16 rest; split evenly over the replica's GPUs)
      - activation headroom, per GPU:
            runtime overhead   2 GiB    CUDA context, cuBLAS and TensorRT-LLM workspaces, sampler, logits
            activations        64 KiB x maxNumTokens   hidden states, attention and expert buffers of one step
            CUDA graphs        0.5 GiB  the captured decode graphs
            NCCL               1 GiB    only with more than one GPU (all-reduce buffers)
      = free memory; TensorRT-LLM gives `kv_cache_free_memory_fraction` of it to the KV cache.

KV cache bytes per token count the full-attention layers only (half of the layers; 8 KV heads x 64 dims x
K and V x 2 bytes for BF16, 1 for FP8); each sequence also holds a fixed 128-token window in every
sliding-window layer. A plan fits when `maxBatchSize` sequences of `maxSeqLen` tokens fit in the KV cache
at once: every admitted request can reach its full length without being evicted. When `maxBatchSize`
is left out, the planner picks the largest batch that fits (up to the default); an explicit context and
batch that cannot fit are rejected with the fixes that would make them fit.

GPUs per replica: gpt-oss-20b always 1; gpt-oss-120b 1 on a GPU of at least 90 GiB (H100 NVL, H200, H20,
B200, GB200), else 2 with TP2/EP2 (NVIDIA's Hopper recipe), unless gpu.count says otherwise. A replica on a
MIG slice (gpu.migProfile) has exactly one slice and is planned from the slice's memory.

The GPU comes from the catalog (catalog.py; aliases and any letter case accepted), or from the spec for a
product the catalog lacks (gpu.memoryGiB, optionally gpu.architecture, default hopper). The architecture
picks TensorRT-LLM's MoE kernels: TRITON on Hopper, TRTLLM on Blackwell (CUTLASS on both when asked).

Defaults (maxSeqLen / maxBatchSize / maxNumTokens / KV fraction):
    gpt-oss-20b                         32768 / 64 / 16384 / 0.90
    gpt-oss-120b, 2 GPUs (the recipe)   32768 / 64 / 20000 / 0.85, CUDA graphs up to 64, TRTLLM_ENABLE_PDL=1
    gpt-oss-120b, 1 GPU >= 90 GiB       32768 / 64 / 16384 / 0.90
    gpt-oss-120b, 1 GPU of 80 GB        16384 / 16 /  8192 / 0.90   (tight: ~11 GiB of KV cache)
An auto-sized batch above 8 is rounded down to a multiple of 8 (it then matches a CUDA graph size).
Chunked prefill is on whenever maxNumTokens < maxSeqLen, so a long prompt is prefilled over several steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from gptoss_operator import names
from gptoss_operator.api import GptOssDeploymentSpec, GpuSpec
from gptoss_operator.catalog import (
    ARCHITECTURES,
    BF16_BYTES,
    FP8_BYTES,
    GIB,
    KIB,
    ArchitectureFacts,
    GpuFacts,
    ModelFacts,
    find_gpu,
    known_gpu_products,
    mig_resource,
    model_facts,
)
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import EngineSettings, KvBudget, KvCacheDtype, MoeBackend, ServingPlan

# ---------------------------------------------------------------------------------------- memory model
RUNTIME_OVERHEAD_GIB: Final = 2.0
ACTIVATION_BYTES_PER_BATCH_TOKEN: Final = 64 * KIB
CUDA_GRAPH_GIB: Final = 0.5
NCCL_GIB: Final = 1.0

# A single GPU of at least this much memory holds gpt-oss-120b with a useful KV cache (H100 NVL, H200).
SINGLE_GPU_120B_MIN_GIB: Final = 90.0
MAX_CUDA_GRAPH_BATCH: Final = 256  # larger batches run without a captured graph
BATCH_ALIGNMENT: Final = 8  # auto-sized batches above this are rounded down to a multiple of it

# NVIDIA's Hopper recipe for TensorRT-LLM runs gpt-oss with programmatic dependent launch (Blackwell
# supports it too, and NVIDIA's Blackwell guide sets the same variable).
HOPPER_ENVIRONMENT: Final = {"TRTLLM_ENABLE_PDL": "1"}
DEFAULT_CUSTOM_ARCHITECTURE: Final = "hopper"


class PlanError(ValueError):
    """The spec asks for something that cannot be served; `field` is the dotted camelCase spec path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class EngineDefaults:
    """Engine settings used where the spec leaves them out."""

    max_seq_len: int
    max_batch_size: int
    max_num_tokens: int
    kv_cache_fraction: float


# 120b on two GPUs follows NVIDIA's TP2/EP2 recipe (max_num_tokens 20000, KV fraction 0.85, graphs to 64).
# NVIDIA's gpt-oss deployment recipes for TensorRT-LLM stream every 20 decoding steps: one response per
# request per 20 tokens keeps the Python serving path (Triton model, gRPC, gateway, SSE) far from being
# the bottleneck at H100 rates, at about 0.2 s between chunks for a client (invisible when reading).
STREAM_INTERVAL: Final = 20
DEFAULTS_20B: Final = EngineDefaults(max_seq_len=32768, max_batch_size=64, max_num_tokens=16384, kv_cache_fraction=0.9)
DEFAULTS_120B_TP2: Final = EngineDefaults(
    max_seq_len=32768, max_batch_size=64, max_num_tokens=20000, kv_cache_fraction=0.85
)
DEFAULTS_120B_LARGE_GPU: Final = EngineDefaults(
    max_seq_len=32768, max_batch_size=64, max_num_tokens=16384, kv_cache_fraction=0.9
)
# One 80 GB GPU leaves ~11 GiB of KV cache after 64 GiB of weights: a modest context and batch that fit.
DEFAULTS_120B_TIGHT: Final = EngineDefaults(
    max_seq_len=16384, max_batch_size=16, max_num_tokens=8192, kv_cache_fraction=0.9
)


def plan(spec: GptOssDeploymentSpec, settings: OperatorSettings) -> ServingPlan:
    """The serving plan for `spec`, or PlanError naming the field and the fix."""
    del settings  # no setting changes the plan today; kept so the planner's inputs are explicit
    model = model_facts(spec.model)
    gpu = resolve_gpu(spec.gpu)
    gpus = _resolve_gpu_count(spec, model, gpu)
    defaults = _engine_defaults(model, gpu, gpus)
    engine = spec.engine

    _check_attention_dp(engine.attention_data_parallel, gpus)
    _check_autoscaling(spec)
    kv_dtype: KvCacheDtype = engine.kv_cache_dtype
    element_bytes = FP8_BYTES if kv_dtype == "fp8" else BF16_BYTES
    max_seq_len = _resolve_max_seq_len(engine.max_seq_len, defaults, model)
    max_num_tokens = engine.max_num_tokens or defaults.max_num_tokens
    fraction = engine.kv_cache_memory_fraction or defaults.kv_cache_fraction

    memory = _memory(model, gpu, gpus, max_num_tokens, fraction, spec)
    bytes_per_token = model.kv_bytes_per_token(element_bytes)
    sequence_bytes = max_seq_len * bytes_per_token + model.sliding_kv_bytes_per_sequence(element_bytes)
    fitting_sequences = int(memory.kv_cache_bytes // sequence_bytes)
    max_batch_size = _resolve_max_batch_size(engine.max_batch_size, defaults, fitting_sequences, max_seq_len, memory)
    _check_max_num_tokens(max_num_tokens, max_batch_size, explicit=engine.max_num_tokens is not None)

    settings_out = EngineSettings(
        tensor_parallel_size=gpus,
        moe_expert_parallel_size=gpus,
        moe_backend=_resolve_moe_backend(engine.moe_backend, gpu),
        attention_data_parallel=bool(engine.attention_data_parallel),
        max_seq_len=max_seq_len,
        max_batch_size=max_batch_size,
        max_num_tokens=max_num_tokens,
        kv_cache_free_memory_fraction=fraction,
        kv_cache_dtype=kv_dtype,
        cuda_graph_batch_sizes=cuda_graph_batch_sizes(max_batch_size),
        cuda_graph_padding=True,
        enable_chunked_prefill=max_num_tokens < max_seq_len,
        stream_interval=STREAM_INTERVAL,
        environment=dict(HOPPER_ENVIRONMENT),
    )
    budget = KvBudget(
        gpu_memory_gib=_round(memory.gpu_memory_gib),
        weights_gib=_round(model.loaded_weights_gib),
        activation_headroom_gib=_round(memory.headroom_gib),
        kv_cache_gib=_round(memory.kv_cache_bytes / GIB),
        kv_bytes_per_token=bytes_per_token,
        kv_cache_tokens=int(memory.kv_cache_bytes // bytes_per_token),
        max_concurrent_sequences=fitting_sequences,
    )
    subdir, revision = _weights_location(spec, model)
    return ServingPlan(
        model=spec.model,
        gpu_product=gpu.product,
        gpus_per_replica=gpus,
        engine=settings_out,
        kv_budget=budget,
        default_reasoning_effort=spec.serving.reasoning_effort,
        openai_endpoint=spec.serving.openai_endpoint,
        weights_subdir=subdir,
        weights_revision=revision,
    )


# ------------------------------------------------------------------------------------------ resolution
@dataclass(frozen=True)
class ResolvedGpu:
    """What one replica's GPU unit is: a whole GPU, or one MIG slice of it."""

    product: str  # the canonical nvidia.com/gpu.product value (the spec's spelling for an uncatalogued one)
    memory_gib: float  # of one GPU, or of the slice
    architecture: ArchitectureFacts
    mig_profile: str | None
    memory_field: str | None  # the spec field the memory came from, when not the catalog

    @property
    def description(self) -> str:
        return f"{self.product} MIG {self.mig_profile}" if self.mig_profile else self.product


def resolve_gpu(gpu_spec: GpuSpec) -> ResolvedGpu:
    """The spec's GPU from the catalog, or from gpu.memoryGiB for a product the catalog lacks."""
    known = find_gpu(gpu_spec.product)
    memory_field: str | None = None
    if gpu_spec.memory_gib is not None:
        memory_gib, memory_field = gpu_spec.memory_gib, "gpu.memoryGiB"
    elif known is not None:
        memory_gib = _catalog_memory_gib(known, gpu_spec.mig_profile)
    else:
        raise PlanError(
            "gpu.product",
            f'unknown GPU product "{gpu_spec.product}"; use one of {", ".join(known_gpu_products())} (the value '
            "of the node label nvidia.com/gpu.product), or describe it with gpu.memoryGiB (and gpu.architecture)",
        )
    architecture = ARCHITECTURES[
        gpu_spec.architecture or (known.architecture if known else DEFAULT_CUSTOM_ARCHITECTURE)
    ]
    product = known.product if known else gpu_spec.product
    return ResolvedGpu(product, memory_gib, architecture, gpu_spec.mig_profile, memory_field)


def _catalog_memory_gib(known: GpuFacts, mig_profile: str | None) -> float:
    if mig_profile is None:
        return known.memory_gib
    slice_facts = known.mig_profile(mig_profile)
    if slice_facts is None:
        offered = ", ".join(profile.name for profile in known.mig_profiles) or "none"
        raise PlanError(
            "gpu.migProfile",
            f"{known.product} has no MIG profile {mig_profile} (its profiles: {offered}); use one of them, or "
            "give the slice's memory in gpu.memoryGiB",
        )
    return slice_facts.memory_gib


@dataclass(frozen=True)
class GpuPlacement:
    """Where a replica's pod may run: the resource it requests and the node labels it needs."""

    resource: str  # nvidia.com/gpu, or nvidia.com/mig-<profile> for a MIG slice
    product_labels: tuple[str, ...]  # accepted nvidia.com/gpu.product values; empty when node_selector replaces GFD
    node_selector: dict[str, str]  # labels required instead of GPU Feature Discovery's (gpu.nodeSelector)
    mig_profile: str | None


def gpu_placement(spec: GptOssDeploymentSpec) -> GpuPlacement:
    """The scheduling side of spec.gpu; the builders use it, and it never fails (the plan judged the spec)."""
    gpu = spec.gpu
    resource = mig_resource(gpu.mig_profile) if gpu.mig_profile else names.GPU_RESOURCE
    if gpu.node_selector:
        return GpuPlacement(resource, (), dict(gpu.node_selector), gpu.mig_profile)
    known = find_gpu(gpu.product)
    # The canonical label value, plus the spelling the spec used when it is an alias (GFD versions differ).
    products = tuple(sorted({known.product if known else gpu.product, gpu.product}))
    return GpuPlacement(resource, products, {}, gpu.mig_profile)


def _resolve_gpu_count(spec: GptOssDeploymentSpec, model: ModelFacts, gpu: ResolvedGpu) -> int:
    count = spec.gpu.count
    if gpu.mig_profile is not None:
        return 1  # admission refuses gpu.count 2 with a MIG profile (CEL_MIG_ONE_SLICE)
    if model.name == "gpt-oss-20b":
        if count not in (None, 1):
            raise PlanError("gpu.count", f"gpt-oss-20b runs on 1 GPU, not {count}; set gpu.count to 1 or leave it out")
        return 1
    if count is None:
        return 1 if gpu.memory_gib >= SINGLE_GPU_120B_MIN_GIB else 2
    if count not in (1, 2):
        raise PlanError(
            "gpu.count",
            f"gpt-oss-120b runs on 1 or 2 GPUs (TP2/EP2), not {count}; set gpu.count to 1 or 2 or leave it out",
        )
    return count


def _engine_defaults(model: ModelFacts, gpu: ResolvedGpu, gpus: int) -> EngineDefaults:
    if model.name == "gpt-oss-20b":
        return DEFAULTS_20B
    if gpus == 2:
        return DEFAULTS_120B_TP2
    if gpu.memory_gib >= SINGLE_GPU_120B_MIN_GIB:
        return DEFAULTS_120B_LARGE_GPU
    return DEFAULTS_120B_TIGHT


def _check_attention_dp(requested: bool | None, gpus: int) -> None:
    if requested and gpus < 2:
        raise PlanError(
            "engine.attentionDataParallel",
            "attention data parallelism needs more than one GPU per replica; set it to false or use gpu.count 2",
        )


def _check_autoscaling(spec: GptOssDeploymentSpec) -> None:
    autoscaling = spec.autoscaling
    if not autoscaling.enabled:
        return
    if autoscaling.min_replicas > autoscaling.max_replicas:
        raise PlanError(
            "autoscaling.minReplicas",
            f"{autoscaling.min_replicas} exceeds autoscaling.maxReplicas ({autoscaling.max_replicas}); lower it",
        )
    if autoscaling.mode == "keda" and autoscaling.prometheus_address is None:
        raise PlanError(
            "autoscaling.prometheusAddress",
            "mode keda queries Prometheus; set autoscaling.prometheusAddress, e.g. http://prometheus.monitoring:9090",
        )


def _resolve_max_seq_len(requested: int | None, defaults: EngineDefaults, model: ModelFacts) -> int:
    if requested is None:
        return min(defaults.max_seq_len, model.max_context)
    if requested > model.max_context:
        raise PlanError(
            "engine.maxSeqLen", f"{requested} exceeds the {model.max_context}-token context of {model.name}; lower it"
        )
    return requested


def _resolve_moe_backend(requested: str, gpu: ResolvedGpu) -> MoeBackend:
    """auto: the architecture's default (catalog.ARCHITECTURES); an explicit choice must run there."""
    architecture = gpu.architecture
    if requested == "auto":
        return architecture.default_moe_backend
    for backend in architecture.moe_backends:
        if backend == requested:
            return backend
    raise PlanError(
        "engine.moeBackend",
        f"{requested} MoE kernels do not run gpt-oss on {architecture.name} GPUs ({gpu.product}); use "
        f"{' or '.join(architecture.moe_backends)}, or auto",
    )


@dataclass(frozen=True)
class _Memory:
    gpu_memory_gib: float
    headroom_gib: float
    kv_cache_bytes: float


def _memory(
    model: ModelFacts, gpu: ResolvedGpu, gpus: int, max_num_tokens: int, fraction: float, spec: GptOssDeploymentSpec
) -> _Memory:
    per_gpu_headroom = (
        RUNTIME_OVERHEAD_GIB
        + max_num_tokens * ACTIVATION_BYTES_PER_BATCH_TOKEN / GIB
        + CUDA_GRAPH_GIB
        + (NCCL_GIB if gpus > 1 else 0.0)
    )
    total = gpu.memory_gib * gpus
    headroom = per_gpu_headroom * gpus
    free_gib = total - model.loaded_weights_gib - headroom
    if free_gib <= 0:
        raise PlanError(
            _memory_field(model, gpu, gpus),
            f"{model.name} needs {model.loaded_weights_gib:.0f} GiB of weights plus {headroom:.1f} GiB of headroom "
            f"but {gpus}x {gpu.description} has {total:.1f} GiB; {_larger_memory_fix(gpu)}"
            + (f", or lower engine.maxNumTokens ({max_num_tokens})" if spec.engine.max_num_tokens else ""),
        )
    return _Memory(gpu_memory_gib=total, headroom_gib=headroom, kv_cache_bytes=free_gib * fraction * GIB)


def _memory_field(model: ModelFacts, gpu: ResolvedGpu, gpus: int) -> str:
    """The field to blame when the weights do not fit: the slice, the given memory, the count or the product."""
    if gpu.mig_profile is not None:
        return "gpu.migProfile"
    if gpu.memory_field is not None:
        return gpu.memory_field
    return "gpu.count" if model.name == "gpt-oss-120b" and gpus == 1 else "gpu.product"


def _larger_memory_fix(gpu: ResolvedGpu) -> str:
    if gpu.mig_profile is not None:
        return "use a larger MIG slice (gpu.migProfile) or whole GPUs (remove gpu.migProfile)"
    return "use gpu.count 2 or a larger GPU"


def _resolve_max_batch_size(
    requested: int | None, defaults: EngineDefaults, fitting: int, max_seq_len: int, memory: _Memory
) -> int:
    kv_gib = memory.kv_cache_bytes / GIB
    if fitting < 1:
        raise PlanError(
            "engine.maxSeqLen",
            f"one sequence of {max_seq_len} tokens does not fit in the {kv_gib:.1f} GiB KV cache; lower "
            "engine.maxSeqLen, set engine.kvCacheDtype to fp8, or use gpu.count 2",
        )
    if requested is None:
        chosen = min(defaults.max_batch_size, fitting)
        return chosen - chosen % BATCH_ALIGNMENT if chosen > BATCH_ALIGNMENT else chosen
    if requested > fitting:
        raise PlanError(
            "engine.maxBatchSize",
            f"{requested} sequences of engine.maxSeqLen {max_seq_len} tokens do not fit in the {kv_gib:.1f} GiB "
            f"KV cache (it holds {fitting}); lower engine.maxBatchSize to {fitting} or engine.maxSeqLen, set "
            "engine.kvCacheDtype to fp8, or use gpu.count 2",
        )
    return requested


def _check_max_num_tokens(max_num_tokens: int, max_batch_size: int, *, explicit: bool) -> None:
    if max_num_tokens < max_batch_size:
        field = "engine.maxNumTokens" if explicit else "engine.maxBatchSize"
        raise PlanError(
            field,
            f"engine.maxNumTokens ({max_num_tokens}) must be at least engine.maxBatchSize ({max_batch_size}) so "
            "every scheduled sequence can decode a token each step; raise engine.maxNumTokens or lower "
            "engine.maxBatchSize",
        )


def _weights_location(spec: GptOssDeploymentSpec, model: ModelFacts) -> tuple[str, str | None]:
    """(folder under the weights mount, pinned revision). An existing claim is mounted with its subPath."""
    if spec.weights.existing_claim is not None:
        return "", None
    source = spec.weights.hugging_face
    repo = (source.repo if source else None) or model.default_repo
    revision = source.revision if source else "main"
    return weights_subdir(repo, revision), revision


def weights_subdir(repo: str, revision: str) -> str:
    """Each repo and revision get their own folder on the cache, so a new revision never overwrites the old."""
    return f"{_path_safe(repo)}/{_path_safe(revision)}"


def _path_safe(text: str) -> str:
    return text.replace("/", "--")


def cuda_graph_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two, plus 1.5x steps from 16 on (less padding), plus the max batch itself, capped at 256."""
    limit = min(max_batch_size, MAX_CUDA_GRAPH_BATCH)
    sizes = {limit}
    power = 1
    while power <= limit:
        sizes.add(power)
        if power >= 16 and power * 3 // 2 <= limit:
            sizes.add(power * 3 // 2)
        power *= 2
    return tuple(sorted(sizes))


def _round(value: float) -> float:
    return math.floor(value * 100) / 100


# --------------------------------------------------------------------------------------------- explain
def explain(serving_plan: ServingPlan, placement: GpuPlacement | None = None) -> str:
    """The plan in words, for `gptoss-operator plan` (with where the pods schedule, when given)."""
    engine = serving_plan.engine
    budget = serving_plan.kv_budget
    unit = serving_plan.gpu_product
    if placement is not None and placement.mig_profile is not None:
        unit += f" MIG {placement.mig_profile} slice"
    parallel = (
        f"tensor parallel {engine.tensor_parallel_size} with expert parallel {engine.moe_expert_parallel_size}"
        if serving_plan.gpus_per_replica > 1
        else "no parallelism (one GPU holds the whole model)"
    )
    kv_type = "FP8" if engine.kv_cache_dtype == "fp8" else "BF16"
    lines = [
        f"Model {serving_plan.model} on {serving_plan.gpus_per_replica}x {unit} per replica: {parallel}.",
        f"MoE backend {engine.moe_backend}; attention data parallel "
        f"{'on' if engine.attention_data_parallel else 'off'}.",
        f"GPU memory {budget.gpu_memory_gib:.1f} GiB = weights {budget.weights_gib:.1f} GiB + headroom "
        f"{budget.activation_headroom_gib:.1f} GiB (runtime, activations for {engine.max_num_tokens} tokens, CUDA "
        f"graphs{', NCCL' if serving_plan.gpus_per_replica > 1 else ''}) + free; the KV cache takes "
        f"{engine.kv_cache_free_memory_fraction:.0%} of free: {budget.kv_cache_gib:.1f} GiB.",
        f"KV cache ({kv_type}, {budget.kv_bytes_per_token // KIB} KiB per token): {budget.kv_cache_tokens:,} tokens, "
        f"{budget.max_concurrent_sequences} sequences of the full {engine.max_seq_len} tokens at once.",
        f"Batches of up to {engine.max_batch_size} sequences and {engine.max_num_tokens} tokens per step"
        f"{' (long prompts are prefilled in chunks)' if engine.enable_chunked_prefill else ''}; CUDA graphs for "
        f"batch sizes {', '.join(str(size) for size in engine.cuda_graph_batch_sizes)}.",
        f"Engine environment: {', '.join(f'{k}={v}' for k, v in sorted(engine.environment.items())) or 'none'}.",
        f"Default reasoning effort {serving_plan.default_reasoning_effort}; OpenAI-compatible endpoint "
        f"{'on' if serving_plan.openai_endpoint else 'off'}.",
    ]
    if placement is not None:
        lines.append(_explain_placement(serving_plan.gpus_per_replica, placement))
    if serving_plan.weights_revision is not None:
        lines.append(
            f"Weights: revision {serving_plan.weights_revision} under {serving_plan.weights_subdir} on the cache."
        )
    else:
        lines.append("Weights: an existing PersistentVolumeClaim.")
    return "\n".join(lines) + "\n"


def _explain_placement(gpus: int, placement: GpuPlacement) -> str:
    if placement.node_selector:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(placement.node_selector.items()))
        where = f"nodes labelled {labels} (gpu.nodeSelector; GPU Feature Discovery's label not required)"
    else:
        where = f"nodes whose nvidia.com/gpu.product is {' or '.join(placement.product_labels)}"
    return f"Scheduling: each replica requests {gpus} {placement.resource} on {where}."
