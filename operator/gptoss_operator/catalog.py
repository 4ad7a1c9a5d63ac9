"""The facts the planner works from: the two gpt-oss models and the GPUs they run on.

One source of truth for these numbers. Model facts come from OpenAI's model card and the checkpoints'
`config.json`; GPU memory is what GPU Feature Discovery reports in `nvidia.com/gpu.memory` (MiB), which
is what CUDA can use, a little less than the marketing size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gptoss_runtime.plan import ModelName

GIB: Final = 1024**3
KIB: Final = 1024
BF16_BYTES: Final = 2
FP8_BYTES: Final = 1


@dataclass(frozen=True)
class ModelFacts:
    """Architecture and memory facts of one gpt-oss model."""

    name: ModelName
    total_params_billions: float
    active_params_billions: float
    layers: int
    experts: int
    experts_per_token: int
    query_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    sliding_window: int  # every other layer attends to this many tokens only
    loaded_weights_gib: float  # MXFP4 experts + BF16 rest, as resident on the GPUs after loading
    default_repo: str
    default_cache_size: str
    max_context: int

    @property
    def full_attention_layers(self) -> int:
        """Layers alternate sliding-window and full attention: half of them see the whole context."""
        return self.layers // 2

    @property
    def sliding_attention_layers(self) -> int:
        return self.layers - self.full_attention_layers

    def kv_bytes_per_token_per_layer(self, element_bytes: int = BF16_BYTES) -> int:
        """K and V of every KV head of one layer for one token."""
        return self.kv_heads * self.head_dim * 2 * element_bytes

    def kv_bytes_per_token(self, element_bytes: int = BF16_BYTES) -> int:
        """KV bytes one more token of context costs: only full-attention layers grow with the context."""
        return self.full_attention_layers * self.kv_bytes_per_token_per_layer(element_bytes)

    def sliding_kv_bytes_per_sequence(self, element_bytes: int = BF16_BYTES) -> int:
        """The fixed KV a sequence needs in the sliding-window layers (a window of tokens each)."""
        return self.sliding_attention_layers * self.sliding_window * self.kv_bytes_per_token_per_layer(element_bytes)


@dataclass(frozen=True)
class GpuFacts:
    """One GPU product as GPU Feature Discovery labels it."""

    product: str  # value of the node label nvidia.com/gpu.product
    memory_mib: int  # value of the node label nvidia.com/gpu.memory
    form_factor: str
    nvlink: bool
    description: str

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


MODELS: Final[dict[ModelName, ModelFacts]] = {
    "gpt-oss-20b": ModelFacts(
        name="gpt-oss-20b",
        total_params_billions=21.0,
        active_params_billions=3.6,
        layers=24,
        experts=32,
        experts_per_token=4,
        query_heads=64,
        kv_heads=8,
        head_dim=64,
        hidden_size=2880,
        sliding_window=128,
        loaded_weights_gib=13.0,
        default_repo="openai/gpt-oss-20b",
        default_cache_size="40Gi",
        max_context=131072,
    ),
    "gpt-oss-120b": ModelFacts(
        name="gpt-oss-120b",
        total_params_billions=117.0,
        active_params_billions=5.1,
        layers=36,
        experts=128,
        experts_per_token=4,
        query_heads=64,
        kv_heads=8,
        head_dim=64,
        hidden_size=2880,
        sliding_window=128,
        # Measured loads span ~61-66 GiB; plan with a value in the upper half so a plan that fits on
        # paper also fits on the GPU.
        loaded_weights_gib=64.0,
        default_repo="openai/gpt-oss-120b",
        default_cache_size="150Gi",
        max_context=131072,
    ),
}

_H100_SXM = GpuFacts("NVIDIA-H100-80GB-HBM3", 81559, "SXM5", True, "H100 SXM5 80 GB HBM3")
_H100_PCIE = GpuFacts("NVIDIA-H100-PCIe", 81559, "PCIe", False, "H100 PCIe 80 GB")
_H100_NVL = GpuFacts("NVIDIA-H100-NVL", 95830, "PCIe (NVL)", True, "H100 NVL 94 GB")
_H200 = GpuFacts("NVIDIA-H200", 143771, "SXM5", True, "H200 141 GB HBM3e")

GPUS: Final[dict[str, GpuFacts]] = {gpu.product: gpu for gpu in (_H100_SXM, _H100_PCIE, _H100_NVL, _H200)}

# Other spellings people write (or older GFD/driver versions report), mapped to the canonical product.
GPU_ALIASES: Final[dict[str, str]] = {
    "NVIDIA-H100-SXM5-80GB": _H100_SXM.product,
    "NVIDIA-H100-80GB": _H100_SXM.product,
    "NVIDIA-H100-PCIE": _H100_PCIE.product,
    "NVIDIA-H100-PCIe-80GB": _H100_PCIE.product,
    "NVIDIA-H100-NVL-94GB": _H100_NVL.product,
    "NVIDIA-H200-141GB-HBM3e": _H200.product,
    "NVIDIA-H200-SXM-141GB": _H200.product,
}


def model_facts(name: ModelName) -> ModelFacts:
    return MODELS[name]


def find_gpu(product: str) -> GpuFacts | None:
    """The GPU for a product label value or a known alias; None when unknown."""
    canonical = GPU_ALIASES.get(product, product)
    return GPUS.get(canonical)


def known_gpu_products() -> tuple[str, ...]:
    return tuple(GPUS)
