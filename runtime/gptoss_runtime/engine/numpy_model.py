"""The gpt-oss forward pass in numpy (float32), as transformers' `GptOssForCausalLM` computes it.

Pre-norm decoder layers: RMSNorm (`weight * x_hat`), grouped-query attention with one learned sink logit
per head (appended before the softmax, dropped after), alternating sliding-window and full layers,
RoPE on the two halves of each head with YaRN scaling; then a top-k router over the raw logits with a
softmax over the chosen k, and clamped-SwiGLU experts dequantized from MXFP4 at load.

`forward` takes a ragged batch: each segment is the new tokens of one sequence and that sequence's KV
cache, so one call can prefill some sequences and decode others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gptoss_runtime.checkpoint import CheckpointError, load_checkpoint_tensors, read_config
from gptoss_runtime.mxfp4 import decode_mxfp4

Array = npt.NDArray[np.float32]

SLIDING_ATTENTION = "sliding_attention"
FULL_ATTENTION = "full_attention"
DEFAULT_SWIGLU_ALPHA = 1.702
# Dequantized float32 weights beyond this are a published model, not a checkpoint for the CPU engine.
DEFAULT_MAX_WEIGHT_BYTES = 4 * 1024**3
QUERY_CHUNK = 128  # queries attended at once during a prefill


@dataclass(frozen=True)
class ModelConfig:
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    head_dim: int
    num_attention_heads: int
    num_key_value_heads: int
    num_local_experts: int
    num_experts_per_tok: int
    vocab_size: int
    sliding_window: int
    layer_types: tuple[str, ...]
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Mapping[str, Any] | None
    swiglu_limit: float
    swiglu_alpha: float = DEFAULT_SWIGLU_ALPHA

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> ModelConfig:
        layers = int(config["num_hidden_layers"])
        layer_types = config.get("layer_types") or [
            SLIDING_ATTENTION if layer % 2 == 0 else FULL_ATTENTION for layer in range(layers)
        ]
        if len(layer_types) != layers or any(t not in (SLIDING_ATTENTION, FULL_ATTENTION) for t in layer_types):
            raise CheckpointError(
                f"config.json: layer_types must list {layers} entries of {SLIDING_ATTENTION!r}/{FULL_ATTENTION!r}"
            )
        heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
        if heads % kv_heads != 0:
            raise CheckpointError(
                f"config.json: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )
        scaling = config.get("rope_scaling") or config.get("rope_parameters")
        return cls(
            num_hidden_layers=layers,
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            head_dim=int(config["head_dim"]),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            num_local_experts=int(config["num_local_experts"]),
            num_experts_per_tok=int(config["num_experts_per_tok"]),
            vocab_size=int(config["vocab_size"]),
            sliding_window=int(config.get("sliding_window") or 0),
            layer_types=tuple(layer_types),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            rope_theta=float(config.get("rope_theta") or (scaling or {}).get("rope_theta") or 150000.0),
            rope_scaling=dict(scaling) if isinstance(scaling, Mapping) else None,
            swiglu_limit=float(config.get("swiglu_limit", 7.0)),
            swiglu_alpha=float(config.get("swiglu_alpha", DEFAULT_SWIGLU_ALPHA)),
        )

    def float32_weight_bytes(self) -> int:
        hidden, inter = self.hidden_size, self.intermediate_size
        q_width, kv_width = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        attention = hidden * (2 * q_width + 2 * kv_width)
        experts = self.num_local_experts * 3 * hidden * inter
        return 4 * (2 * self.vocab_size * hidden + self.num_hidden_layers * (attention + experts))


def rope_frequencies(config: ModelConfig) -> tuple[Array, float]:
    """Inverse frequencies [head_dim / 2] and the cos/sin multiplier (YaRN's attention factor)."""
    dim = config.head_dim
    base = config.rope_theta
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv_freq_extrapolation = 1.0 / base**exponents
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type", scaling.get("type", "default")) != "yarn":
        return inv_freq_extrapolation.astype(np.float32), 1.0
    factor = float(scaling["factor"])
    original_max = float(scaling.get("original_max_position_embeddings") or 4096)
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    beta_fast = float(scaling.get("beta_fast") or 32.0)
    beta_slow = float(scaling.get("beta_slow") or 1.0)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original_max / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero, as the reference does
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation_weight = 1.0 - ramp
    inv_freq_interpolation = inv_freq_extrapolation / factor
    inv_freq = inv_freq_interpolation * (1 - extrapolation_weight) + inv_freq_extrapolation * extrapolation_weight
    return inv_freq.astype(np.float32), float(attention_factor)


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    variance = np.mean(x * x, axis=-1, keepdims=True)
    normed: Array = weight * (x / np.sqrt(variance + eps))
    return normed.astype(np.float32)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate the two halves of each head: x [T, heads, D], cos/sin [T, D/2]."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    cos_, sin_ = cos[:, None, :], sin[:, None, :]
    return np.concatenate([first * cos_ - second * sin_, second * cos_ + first * sin_], axis=-1)


def sigmoid(x: Array) -> Array:
    result: Array = 0.5 * (1.0 + np.tanh(0.5 * x))
    return result.astype(np.float32)


@dataclass
class LayerWeights:
    input_norm: Array
    post_attention_norm: Array
    q_weight: Array  # [heads * D, H] (nn.Linear layout: y = x @ W.T + b)
    q_bias: Array
    k_weight: Array
    k_bias: Array
    v_weight: Array
    v_bias: Array
    o_weight: Array  # [H, heads * D]
    o_bias: Array
    sinks: Array  # [heads]
    router_weight: Array  # [E, H]
    router_bias: Array
    gate_up: Array  # [E, H, 2I], x @ W; even columns gate, odd columns up
    gate_up_bias: Array  # [E, 2I]
    down: Array  # [E, I, H]
    down_bias: Array  # [E, H]


class SequenceCache:
    """Keys and values (after RoPE) of one sequence for every layer; grows by doubling."""

    def __init__(self, config: ModelConfig, max_length: int, initial_capacity: int = 64) -> None:
        self.max_length = max_length
        self.length = 0
        capacity = min(max(initial_capacity, 1), max_length)
        shape = (capacity, config.num_key_value_heads, config.head_dim)
        self._keys = [np.zeros(shape, dtype=np.float32) for _ in range(config.num_hidden_layers)]
        self._values = [np.zeros(shape, dtype=np.float32) for _ in range(config.num_hidden_layers)]

    def reserve(self, length: int) -> None:
        if length > self.max_length:
            raise ValueError(f"the sequence would hold {length} tokens; its cache holds at most {self.max_length}")
        capacity = self._keys[0].shape[0]
        if length <= capacity:
            return
        new_capacity = min(max(length, 2 * capacity), self.max_length)
        for store in (self._keys, self._values):
            for layer, old in enumerate(store):
                grown = np.zeros((new_capacity, *old.shape[1:]), dtype=np.float32)
                grown[:capacity] = old
                store[layer] = grown

    def write(self, layer: int, start: int, keys: Array, values: Array) -> None:
        self._keys[layer][start : start + keys.shape[0]] = keys
        self._values[layer][start : start + values.shape[0]] = values

    def keys(self, layer: int, start: int, end: int) -> Array:
        return self._keys[layer][start:end]

    def values(self, layer: int, start: int, end: int) -> Array:
        return self._values[layer][start:end]


@dataclass(frozen=True)
class Segment:
    """New tokens of one sequence; they take the positions after what its cache already holds."""

    token_ids: Sequence[int]
    cache: SequenceCache


class GptOssNumpyModel:
    def __init__(self, config: ModelConfig, tensors: Mapping[str, npt.NDArray[Any]]) -> None:
        self.config = config
        self.embed_tokens = _float(tensors, "model.embed_tokens.weight")
        self.final_norm = _float(tensors, "model.norm.weight")
        self.lm_head = _float(tensors, "lm_head.weight")
        self.layers = [self._load_layer(tensors, layer) for layer in range(config.num_hidden_layers)]
        self.inv_freq, self.rope_scale = rope_frequencies(config)

    @classmethod
    def from_checkpoint(
        cls, weights_dir: Path, *, max_weight_bytes: int = DEFAULT_MAX_WEIGHT_BYTES
    ) -> GptOssNumpyModel:
        config = ModelConfig.from_dict(read_config(weights_dir))
        needed = config.float32_weight_bytes()
        if needed > max_weight_bytes:
            raise CheckpointError(
                f"{weights_dir} needs {needed / 1024**3:.1f} GiB as float32; the numpy reference engine takes "
                f"checkpoints up to {max_weight_bytes / 1024**3:.1f} GiB (use the trtllm engine on GPUs, or a "
                "tiny checkpoint from `gptoss-runtime make-tiny-checkpoint`)"
            )
        return cls(config, load_checkpoint_tensors(weights_dir))

    def _load_layer(self, tensors: Mapping[str, npt.NDArray[Any]], layer: int) -> LayerWeights:
        prefix = f"model.layers.{layer}"
        experts = f"{prefix}.mlp.experts"
        gate_up = decode_mxfp4(tensors[f"{experts}.gate_up_proj_blocks"], tensors[f"{experts}.gate_up_proj_scales"])
        down = decode_mxfp4(tensors[f"{experts}.down_proj_blocks"], tensors[f"{experts}.down_proj_scales"])
        return LayerWeights(
            input_norm=_float(tensors, f"{prefix}.input_layernorm.weight"),
            post_attention_norm=_float(tensors, f"{prefix}.post_attention_layernorm.weight"),
            q_weight=_float(tensors, f"{prefix}.self_attn.q_proj.weight"),
            q_bias=_float(tensors, f"{prefix}.self_attn.q_proj.bias"),
            k_weight=_float(tensors, f"{prefix}.self_attn.k_proj.weight"),
            k_bias=_float(tensors, f"{prefix}.self_attn.k_proj.bias"),
            v_weight=_float(tensors, f"{prefix}.self_attn.v_proj.weight"),
            v_bias=_float(tensors, f"{prefix}.self_attn.v_proj.bias"),
            o_weight=_float(tensors, f"{prefix}.self_attn.o_proj.weight"),
            o_bias=_float(tensors, f"{prefix}.self_attn.o_proj.bias"),
            sinks=_float(tensors, f"{prefix}.self_attn.sinks"),
            router_weight=_float(tensors, f"{prefix}.mlp.router.weight"),
            router_bias=_float(tensors, f"{prefix}.mlp.router.bias"),
            # Stored rows are output features; transformers multiplies x @ W with W [E, in, out].
            gate_up=np.ascontiguousarray(gate_up.transpose(0, 2, 1)),
            gate_up_bias=_float(tensors, f"{experts}.gate_up_proj_bias"),
            down=np.ascontiguousarray(down.transpose(0, 2, 1)),
            down_bias=_float(tensors, f"{experts}.down_proj_bias"),
        )

    def new_cache(self, max_length: int) -> SequenceCache:
        return SequenceCache(self.config, max_length)

    def forward(self, segments: Sequence[Segment], *, all_logits: bool = False) -> list[Array]:
        """Run the new tokens of every segment; returns per segment the logits of its last token [V]
        (or of every new token [T, V] with `all_logits`). Appends the new keys/values to the caches."""
        if not segments:
            return []
        config = self.config
        starts = [segment.cache.length for segment in segments]
        lengths = [len(segment.token_ids) for segment in segments]
        if any(length == 0 for length in lengths):
            raise ValueError("every segment needs at least one new token")
        for segment, start, length in zip(segments, starts, lengths, strict=True):
            segment.cache.reserve(start + length)
        token_ids = np.concatenate([np.asarray(segment.token_ids, dtype=np.int64) for segment in segments])
        if token_ids.min() < 0 or token_ids.max() >= config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {config.vocab_size})")
        positions = np.concatenate(
            [np.arange(start, start + length) for start, length in zip(starts, lengths, strict=True)]
        )
        angles = positions[:, None].astype(np.float32) * self.inv_freq[None, :]
        cos = (np.cos(angles) * self.rope_scale).astype(np.float32)
        sin = (np.sin(angles) * self.rope_scale).astype(np.float32)
        bounds = np.cumsum([0, *lengths])

        hidden = self.embed_tokens[token_ids]
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.input_norm, config.rms_norm_eps)
            attention = self._attention(index, layer, normed, cos, sin, segments, starts, bounds)
            hidden = hidden + attention
            normed = rms_norm(hidden, layer.post_attention_norm, config.rms_norm_eps)
            hidden = hidden + self._experts(layer, normed)
        for segment, length in zip(segments, lengths, strict=True):
            segment.cache.length += length

        hidden = rms_norm(hidden, self.final_norm, config.rms_norm_eps)
        if all_logits:
            logits = hidden @ self.lm_head.T
            return [logits[bounds[i] : bounds[i + 1]] for i in range(len(segments))]
        last_rows = hidden[bounds[1:] - 1]
        logits = last_rows @ self.lm_head.T
        return [logits[i] for i in range(len(segments))]

    def _attention(
        self,
        index: int,
        layer: LayerWeights,
        normed: Array,
        cos: Array,
        sin: Array,
        segments: Sequence[Segment],
        starts: Sequence[int],
        bounds: npt.NDArray[np.int64],
    ) -> Array:
        config = self.config
        heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        count = normed.shape[0]
        queries = apply_rope((normed @ layer.q_weight.T + layer.q_bias).reshape(count, heads, dim), cos, sin)
        keys = apply_rope((normed @ layer.k_weight.T + layer.k_bias).reshape(count, kv_heads, dim), cos, sin)
        values = (normed @ layer.v_weight.T + layer.v_bias).reshape(count, kv_heads, dim)
        window = config.sliding_window if config.layer_types[index] == SLIDING_ATTENTION else 0
        output = np.empty((count, heads * dim), dtype=np.float32)
        for i, segment in enumerate(segments):
            first_row, start = int(bounds[i]), starts[i]
            end = start + int(bounds[i + 1]) - first_row
            segment.cache.write(
                index, start, keys[first_row : int(bounds[i + 1])], values[first_row : int(bounds[i + 1])]
            )
            # Long prompts attend in chunks of queries: bounded memory, and a sliding layer reads only the
            # keys within the window before each chunk.
            for chunk_start in range(start, end, QUERY_CHUNK):
                chunk_end = min(chunk_start + QUERY_CHUNK, end)
                first_key = max(0, chunk_start - window + 1) if window else 0
                rows = slice(first_row + chunk_start - start, first_row + chunk_end - start)
                output[rows] = self._attend(
                    queries[rows],
                    segment.cache.keys(index, first_key, chunk_end),
                    segment.cache.values(index, first_key, chunk_end),
                    np.arange(chunk_start, chunk_end),
                    np.arange(first_key, chunk_end),
                    layer.sinks,
                    window,
                )
        return (output @ layer.o_weight.T + layer.o_bias).astype(np.float32)

    def _attend(
        self,
        queries: Array,  # [T, heads, D]
        keys: Array,  # [S, kv_heads, D]
        values: Array,
        query_positions: npt.NDArray[np.int64],
        key_positions: npt.NDArray[np.int64],
        sinks: Array,
        window: int,
    ) -> Array:
        config = self.config
        kv_heads, dim = config.num_key_value_heads, config.head_dim
        group = config.num_attention_heads // kv_heads
        count = queries.shape[0]
        # Query head h reads kv head h // group: [kv_heads, group * T, D] against [kv_heads, D, S].
        grouped = queries.reshape(count, kv_heads, group, dim).transpose(1, 2, 0, 3).reshape(kv_heads, -1, dim)
        scores = (grouped @ keys.transpose(1, 2, 0)).reshape(kv_heads, group, count, -1) * np.float32(dim**-0.5)
        visible = key_positions[None, :] <= query_positions[:, None]
        if window:
            visible &= query_positions[:, None] - key_positions[None, :] < window
        scores = np.where(visible, scores, np.float32(-np.inf))
        sink_logits = np.broadcast_to(sinks.reshape(kv_heads, group, 1, 1), (kv_heads, group, count, 1))
        combined = np.concatenate([scores, sink_logits], axis=-1)
        combined = np.exp(combined - combined.max(axis=-1, keepdims=True))
        probabilities = (combined / combined.sum(axis=-1, keepdims=True))[..., :-1]  # the sink takes its share
        attended: Array = probabilities.reshape(kv_heads, group * count, -1) @ values.transpose(1, 0, 2)
        attended = attended.reshape(kv_heads, group, count, dim).transpose(2, 0, 1, 3)
        return attended.reshape(count, kv_heads * group * dim).astype(np.float32)

    def _experts(self, layer: LayerWeights, normed: Array) -> Array:
        config = self.config
        top_k = config.num_experts_per_tok
        router_logits = normed @ layer.router_weight.T + layer.router_bias
        chosen = np.argsort(-router_logits, axis=-1, kind="stable")[:, :top_k]
        chosen_logits = np.take_along_axis(router_logits, chosen, axis=-1)
        weights = np.exp(chosen_logits - chosen_logits.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        output = np.zeros_like(normed)
        limit = config.swiglu_limit
        for expert in np.unique(chosen):
            rows, slots = np.nonzero(chosen == expert)
            gate_up = normed[rows] @ layer.gate_up[expert] + layer.gate_up_bias[expert]
            gate = np.minimum(gate_up[:, 0::2], limit)
            up = np.clip(gate_up[:, 1::2], -limit, limit)
            activated = (up + 1.0) * gate * sigmoid(config.swiglu_alpha * gate)
            expert_out = activated @ layer.down[expert] + layer.down_bias[expert]
            output[rows] += expert_out * weights[rows, slots][:, None]
        return output


def _float(tensors: Mapping[str, npt.NDArray[Any]], name: str) -> Array:
    try:
        return np.ascontiguousarray(tensors[name], dtype=np.float32)
    except KeyError as error:
        raise CheckpointError(f"the checkpoint lacks the tensor {name}") from error
