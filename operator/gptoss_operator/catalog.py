"""The facts the planner works from: the two gpt-oss models and the GPUs they run on.

One source of truth for these numbers. Model facts come from OpenAI's model card and the checkpoints'
`config.json`. GPU memory is what GPU Feature Discovery reports in `nvidia.com/gpu.memory` (MiB, the
total `nvidia-smi` shows), which is what CUDA can use, a little less than the marketing size. Products
are keyed by the value of the node label `nvidia.com/gpu.product`: the NVML device name with spaces
turned into dashes (`NVIDIA H100 80GB HBM3` -> `NVIDIA-H100-80GB-HBM3`).

Interconnect and memory sizes are from NVIDIA's product pages and datasheets: H100
(nvidia.com/en-us/data-center/h100, "H100 Tensor Core GPU datasheet"), H200 and H200 NVL
(nvidia.com/en-us/data-center/h200), H800 and H20 (NVIDIA's China-market datasheets: H800 SXM5 NVLink
400 GB/s; H20 96 GB HBM3, NVLink 900 GB/s), B200 (DGX B200 datasheet: 8x 180 GB = 1,440 GB), GB200
(GB200 NVL72 page: 13.4 TB of HBM3e over 72 GPUs, ~186 GB each; NVLink 5 1.8 TB/s per GPU).

MIG slice memory is what `nvidia-smi mig -lgip` lists (GiB) where NVIDIA's mig-parted / GPU Operator
pull requests show it (H100 NVL, H200, B200, GB200; the lower figure where drivers differ); other slices
are estimated at 90% of the nominal size in the profile name, which is below every measured slice of the
same size class, so a plan that fits on paper fits on the slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from gptoss_runtime.plan import ModelName, MoeBackend

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


Architecture = Literal["hopper", "blackwell"]


@dataclass(frozen=True)
class ArchitectureFacts:
    """What TensorRT-LLM runs gpt-oss's MXFP4 mixture of experts with on one GPU architecture."""

    name: Architecture
    default_moe_backend: MoeBackend
    moe_backends: tuple[MoeBackend, ...]  # the backends TensorRT-LLM supports for MXFP4 experts here


# TensorRT-LLM's gpt-oss deployment guide ("MoE Backend Support Matrix"): Hopper runs the MXFP4 experts with
# the TRITON kernels (its default there; CUTLASS also works); Blackwell (B200/GB200) with TRTLLM (its
# default, MXFP8 activations; fastest for latency and throughput) or CUTLASS. TRTLLM is Blackwell-only.
ARCHITECTURES: Final[dict[Architecture, ArchitectureFacts]] = {
    "hopper": ArchitectureFacts("hopper", "TRITON", ("TRITON", "CUTLASS")),
    "blackwell": ArchitectureFacts("blackwell", "TRTLLM", ("TRTLLM", "CUTLASS")),
}


@dataclass(frozen=True)
class MigProfile:
    """A MIG slice: the device plugin's mixed strategy exposes it as the resource `nvidia.com/mig-<name>`."""

    name: str  # e.g. 3g.40gb
    memory_gib: float
    measured: bool  # True: `nvidia-smi mig -lgip`; False: estimated at 90% of the nominal size

    @property
    def resource(self) -> str:
        return mig_resource(self.name)


def mig_resource(profile: str) -> str:
    """The extended resource a MIG slice is requested by (device plugin, mixed strategy)."""
    return f"{MIG_RESOURCE_PREFIX}{profile}"


MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
ESTIMATED_SHARE_OF_NOMINAL: Final = 0.9


def _estimated(name: str) -> MigProfile:
    nominal_gb = float(name.split(".")[1].removesuffix("gb"))
    return MigProfile(name, round(nominal_gb * ESTIMATED_SHARE_OF_NOMINAL, 2), measured=False)


def _measured(name: str, memory_gib: float) -> MigProfile:
    return MigProfile(name, memory_gib, measured=True)


@dataclass(frozen=True)
class GpuFacts:
    """One GPU product as GPU Feature Discovery labels it."""

    product: str  # value of the node label nvidia.com/gpu.product
    memory_mib: int  # value of the node label nvidia.com/gpu.memory
    architecture: Architecture
    form_factor: str
    nvlink: bool  # every GPU of a node reaches its peers over NVLink (not only bridged pairs)
    interconnect: str
    description: str
    mig_profiles: tuple[MigProfile, ...] = ()

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def moe(self) -> ArchitectureFacts:
        return ARCHITECTURES[self.architecture]

    def mig_profile(self, name: str) -> MigProfile | None:
        return next((profile for profile in self.mig_profiles if profile.name == name), None)


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

# MIG profiles per memory size class (the profile names of NVIDIA's MIG user guide).
_MIG_80GB = tuple(_estimated(name) for name in ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"))
_MIG_94GB = (
    _measured("1g.12gb", 10.75),
    _measured("1g.24gb", 21.62),
    _measured("2g.24gb", 21.62),
    _measured("3g.47gb", 46.38),
    _measured("4g.47gb", 46.38),
    _estimated("7g.94gb"),
)
_MIG_96GB = tuple(_estimated(name) for name in ("1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"))
_MIG_141GB = (
    _measured("1g.18gb", 16.0),
    _measured("1g.35gb", 32.25),
    _measured("2g.35gb", 32.25),
    _measured("3g.71gb", 69.5),
    _measured("4g.71gb", 69.5),
    _measured("7g.141gb", 139.75),
)
_MIG_180GB = (
    _measured("1g.23gb", 20.5),
    _measured("1g.45gb", 44.25),
    _measured("2g.45gb", 44.25),
    _estimated("3g.90gb"),
    _estimated("4g.90gb"),
    _estimated("7g.180gb"),
)
_MIG_186GB = (
    _measured("1g.23gb", 22.0),
    _measured("1g.47gb", 45.5),
    _measured("2g.47gb", 45.5),
    _estimated("3g.93gb"),
    _estimated("4g.93gb"),
    _estimated("7g.186gb"),
)

_NVLINK4 = "NVLink 4 900 GB/s per GPU (NVSwitch), PCIe Gen5 128 GB/s"
_NVLINK5 = "NVLink 5 1.8 TB/s per GPU (NVSwitch), PCIe Gen6"
_H100_SXM = GpuFacts(
    "NVIDIA-H100-80GB-HBM3", 81559, "hopper", "SXM5", True, _NVLINK4, "H100 SXM5 80 GB HBM3", _MIG_80GB
)
_H100_PCIE = GpuFacts(
    "NVIDIA-H100-PCIe",
    81559,
    "hopper",
    "PCIe",
    False,
    "PCIe Gen5 128 GB/s; optional NVLink bridge 600 GB/s between pairs",
    "H100 PCIe 80 GB HBM2e",
    _MIG_80GB,
)
_H100_NVL = GpuFacts(
    "NVIDIA-H100-NVL",
    95830,
    "hopper",
    "PCIe (NVL)",
    True,
    "NVLink bridge 600 GB/s between pairs, PCIe Gen5 128 GB/s",
    "H100 NVL 94 GB HBM3",
    _MIG_94GB,
)
_H200 = GpuFacts("NVIDIA-H200", 143771, "hopper", "SXM5", True, _NVLINK4, "H200 SXM 141 GB HBM3e", _MIG_141GB)
# Same 141 GB HBM3e as the SXM part; NVML's total is assumed equal (no published nvidia-smi figure found).
_H200_NVL = GpuFacts(
    "NVIDIA-H200-NVL",
    143771,
    "hopper",
    "PCIe (NVL)",
    True,
    "2- or 4-way NVLink bridge 900 GB/s, PCIe Gen5 128 GB/s",
    "H200 NVL 141 GB HBM3e",
    _MIG_141GB,
)
# The export variants: H100's silicon and memory with a slower NVLink (H800), or less compute (H20).
_H800 = GpuFacts(
    "NVIDIA-H800",
    81559,
    "hopper",
    "SXM5",
    True,
    "NVLink 400 GB/s per GPU, PCIe Gen5 128 GB/s",
    "H800 SXM5 80 GB HBM3",
    _MIG_80GB,
)
_H20 = GpuFacts("NVIDIA-H20", 97871, "hopper", "SXM5", True, _NVLINK4, "H20 96 GB HBM3", _MIG_96GB)
_B200 = GpuFacts("NVIDIA-B200", 183359, "blackwell", "SXM6", True, _NVLINK5, "B200 180 GB HBM3e", _MIG_180GB)
# NVML's total for the 186 GB class is inferred from B200's (183359 MiB for its 180 GB), not read off a node.
_GB200 = GpuFacts(
    "NVIDIA-GB200",
    189471,
    "blackwell",
    "Superchip (Grace + 2 Blackwell)",
    True,
    "NVLink 5 1.8 TB/s per GPU (NVL72 domain), NVLink-C2C 900 GB/s to Grace",
    "GB200 186 GB HBM3e per GPU",
    _MIG_186GB,
)

GPUS: Final[dict[str, GpuFacts]] = {
    gpu.product: gpu for gpu in (_H100_SXM, _H100_PCIE, _H100_NVL, _H200, _H200_NVL, _H800, _H20, _B200, _GB200)
}

# Other spellings people write (or older GFD/driver versions report), mapped to the canonical product.
# Lookups ignore case, so `nvidia-b200` finds NVIDIA-B200 too.
GPU_ALIASES: Final[dict[str, str]] = {
    "NVIDIA-H100-SXM5-80GB": _H100_SXM.product,
    "NVIDIA-H100-80GB": _H100_SXM.product,
    "NVIDIA-H100-SXM": _H100_SXM.product,
    "NVIDIA-H100-PCIe-80GB": _H100_PCIE.product,
    "NVIDIA-H100-NVL-94GB": _H100_NVL.product,
    "NVIDIA-H200-141GB-HBM3e": _H200.product,
    "NVIDIA-H200-SXM-141GB": _H200.product,
    "NVIDIA-H200-SXM": _H200.product,
    "NVIDIA-H200-NVL-141GB": _H200_NVL.product,
    "NVIDIA-H800-80GB-HBM3": _H800.product,
    "NVIDIA-H800-SXM5-80GB": _H800.product,
    "NVIDIA-H20-96GB": _H20.product,
    "NVIDIA-H20-96GB-HBM3": _H20.product,
    "NVIDIA-B200-180GB": _B200.product,
    "NVIDIA-B200-SXM6-180GB": _B200.product,
    "NVIDIA-GB200-186GB": _GB200.product,
}
_BY_LOWER_NAME: Final[dict[str, str]] = {
    **{alias.lower(): product for alias, product in GPU_ALIASES.items()},
    **{product.lower(): product for product in GPUS},
}


def model_facts(name: ModelName) -> ModelFacts:
    return MODELS[name]


def find_gpu(product: str) -> GpuFacts | None:
    """The GPU for a product label value or a known alias (any case); None when unknown."""
    canonical = _BY_LOWER_NAME.get(product.lower())
    return GPUS.get(canonical) if canonical is not None else None


def known_gpu_products() -> tuple[str, ...]:
    return tuple(GPUS)
