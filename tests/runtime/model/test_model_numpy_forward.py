"""The numpy gpt-oss forward pass against a straightforward implementation written here, plus the
properties that matter for serving: incremental decoding equals full recompute, batching does not mix
sequences, sliding windows see W positions including the query, sinks take softmax mass."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gptoss_runtime.checkpoint import load_checkpoint_tensors
from gptoss_runtime.engine import numpy_model
from gptoss_runtime.engine.numpy_model import GptOssNumpyModel, ModelConfig, Segment, rope_frequencies

# ---- an independent, slow, float64 implementation ----------------------------------------------

Floats = npt.NDArray[Any]


def e2m1(code: int) -> float:
    """E2M1 from its bit fields: sign(1) exponent(2, bias 1) mantissa(1); exponent 0 is subnormal."""
    sign = -1.0 if code & 0b1000 else 1.0
    exponent, mantissa = (code >> 1) & 0b11, code & 1
    magnitude = mantissa * 0.5 if exponent == 0 else (1 + mantissa / 2) * 2.0 ** (exponent - 1)
    return sign * magnitude


E2M1 = np.array([e2m1(code) for code in range(16)])


def naive_dequantize(blocks: Floats, scales: Floats) -> Floats:
    low, high = E2M1[blocks & 0xF], E2M1[blocks >> 4]
    values = np.stack([low, high], axis=-1).reshape(*blocks.shape[:-1], 32)
    values = values * (2.0 ** (scales.astype(np.float64) - 127))[..., None]
    result: Floats = values.reshape(*blocks.shape[:-2], -1)
    return result


def naive_yarn(config: dict[str, Any]) -> tuple[Floats, float]:
    dim, base = config["head_dim"], float(config["rope_theta"])
    scaling = config["rope_scaling"]
    factor, original = scaling["factor"], scaling["original_max_position_embeddings"]

    def dim_for(rotations: float) -> float:
        # the dimension whose wavelength fits `rotations` times into the original context
        return float(dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base)))

    low, high = max(dim_for(scaling["beta_fast"]), 0), min(dim_for(scaling["beta_slow"]), dim - 1)
    inv_freq = []
    for i in range(dim // 2):
        plain = base ** (-2 * i / dim)
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        inv_freq.append(plain * (1 - ramp) + (plain / factor) * ramp)
    return np.array(inv_freq), 0.1 * math.log(factor) + 1


def naive_logits(directory: Path, token_ids: list[int]) -> Floats:
    config = json.loads((directory / "config.json").read_text())
    t = {name: np.asarray(value, dtype=np.float64) for name, value in load_checkpoint_tensors(directory).items()}
    raw = load_checkpoint_tensors(directory)
    heads, kv_heads, dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps, limit, window = config["rms_norm_eps"], config["swiglu_limit"], config["sliding_window"]
    inv_freq, rope_scale = naive_yarn(config)

    def norm(x: Floats, weight: Floats) -> Floats:
        normed: Floats = weight * x / np.sqrt(np.mean(x * x) + eps)
        return normed

    def rotate(vector: Floats, position: int) -> Floats:
        half = dim // 2
        cos = np.cos(position * inv_freq) * rope_scale
        sin = np.sin(position * inv_freq) * rope_scale
        a, b = vector[:half], vector[half:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin])

    states = [t["model.embed_tokens.weight"][token] for token in token_ids]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        sliding = config["layer_types"][layer] == "sliding_attention"
        normed = [norm(x, t[f"{p}.input_layernorm.weight"]) for x in states]
        q = [t[f"{p}.self_attn.q_proj.weight"] @ x + t[f"{p}.self_attn.q_proj.bias"] for x in normed]
        k = [t[f"{p}.self_attn.k_proj.weight"] @ x + t[f"{p}.self_attn.k_proj.bias"] for x in normed]
        v = [t[f"{p}.self_attn.v_proj.weight"] @ x + t[f"{p}.self_attn.v_proj.bias"] for x in normed]
        sinks = t[f"{p}.self_attn.sinks"]
        attended = []
        for i in range(len(states)):
            per_head = []
            for h in range(heads):
                kv = h // (heads // kv_heads)
                query = rotate(q[i][h * dim : (h + 1) * dim], i)
                visible = [j for j in range(i + 1) if not sliding or i - j < window]
                logits = [float(query @ rotate(k[j][kv * dim : (kv + 1) * dim], j)) / math.sqrt(dim) for j in visible]
                top = max([*logits, sinks[h]])
                weights = [math.exp(x - top) for x in logits]
                total = sum(weights) + math.exp(sinks[h] - top)
                per_head.append(
                    sum(w / total * v[j][kv * dim : (kv + 1) * dim] for w, j in zip(weights, visible, strict=True))
                )
            attended.append(np.concatenate(per_head))
        states = [
            x + t[f"{p}.self_attn.o_proj.weight"] @ a + t[f"{p}.self_attn.o_proj.bias"]
            for x, a in zip(states, attended, strict=True)
        ]
        gate_up = naive_dequantize(
            raw[f"{p}.mlp.experts.gate_up_proj_blocks"], raw[f"{p}.mlp.experts.gate_up_proj_scales"]
        )
        down = naive_dequantize(raw[f"{p}.mlp.experts.down_proj_blocks"], raw[f"{p}.mlp.experts.down_proj_scales"])
        new_states = []
        for x in states:
            h_in = norm(x, t[f"{p}.post_attention_layernorm.weight"])
            router = t[f"{p}.mlp.router.weight"] @ h_in + t[f"{p}.mlp.router.bias"]
            chosen = sorted(range(len(router)), key=lambda e: -router[e])[: config["num_experts_per_tok"]]
            exps = [math.exp(router[e] - router[chosen[0]]) for e in chosen]
            out = np.zeros_like(x)
            for e, weight in zip(chosen, exps, strict=True):
                projected = gate_up[e] @ h_in + t[f"{p}.mlp.experts.gate_up_proj_bias"][e]  # rows: gate, up, ...
                gate = np.minimum(projected[0::2], limit)
                up = np.clip(projected[1::2], -limit, limit)
                activated = (up + 1) * gate / (1 + np.exp(-1.702 * gate))
                out += weight / sum(exps) * (down[e] @ activated + t[f"{p}.mlp.experts.down_proj_bias"][e])
            new_states.append(x + out)
        states = new_states
    final = [norm(x, t["model.norm.weight"]) for x in states]
    return np.stack([t["lm_head.weight"] @ x for x in final])


# ---- tests ------------------------------------------------------------------------------------


def _tokens(count: int, seed: int = 0) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, 500, count)]


def test_forward_matches_the_straightforward_implementation(tiny_dir: Path, tiny_model: GptOssNumpyModel) -> None:
    tokens = _tokens(20)  # longer than the sliding window (8)
    expected = naive_logits(tiny_dir, tokens)
    actual = tiny_model.forward([Segment(tokens, tiny_model.new_cache(64))], all_logits=True)[0]
    assert actual.shape == (20, tiny_model.config.vocab_size)
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)


def test_incremental_decoding_equals_full_recompute(tiny_model: GptOssNumpyModel) -> None:
    tokens = _tokens(30, seed=1)
    full = tiny_model.forward([Segment(tokens, tiny_model.new_cache(64))], all_logits=True)[0]
    cache = tiny_model.new_cache(64)
    steps = [tiny_model.forward([Segment(tokens[:5], cache)])[0]]
    steps += [tiny_model.forward([Segment([token], cache)])[0] for token in tokens[5:]]
    assert cache.length == 30
    np.testing.assert_allclose(np.stack(steps), full[4:], rtol=1e-4, atol=1e-4)


def test_a_batch_of_sequences_does_not_mix_them(tiny_model: GptOssNumpyModel) -> None:
    first, second = _tokens(12, seed=2), _tokens(5, seed=3)
    alone = [tiny_model.forward([Segment(s, tiny_model.new_cache(32))])[0] for s in (first, second)]
    caches = [tiny_model.new_cache(32), tiny_model.new_cache(32)]
    together = tiny_model.forward([Segment(first, caches[0]), Segment(second, caches[1])])
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-5)


def _single_layer_model(tiny_dir: Path, layer_type: str) -> GptOssNumpyModel:
    full = GptOssNumpyModel.from_checkpoint(tiny_dir)
    config = replace(full.config, num_hidden_layers=1, layer_types=(layer_type,))
    return GptOssNumpyModel(config, load_checkpoint_tensors(tiny_dir))


@pytest.mark.parametrize(("layer_type", "sees_eight_back"), [("sliding_attention", False), ("full_attention", True)])
def test_sliding_window_sees_w_positions_including_the_query(
    tiny_dir: Path, layer_type: str, sees_eight_back: bool
) -> None:
    model = _single_layer_model(tiny_dir, layer_type)
    window = model.config.sliding_window
    tokens = _tokens(window + 1, seed=4)

    def last_logits(sequence: list[int]) -> Floats:
        return model.forward([Segment(sequence, model.new_cache(32))])[0]

    base = last_logits(tokens)
    changed_outside = [tokens[0] + 1, *tokens[1:]]  # position 0 is W positions back from position W
    changed_inside = [tokens[0], tokens[1] + 1, *tokens[2:]]  # W - 1 back: still visible

    def moved(sequence: list[int]) -> float:
        return float(np.abs(last_logits(sequence) - base).max())

    assert moved(changed_inside) > 1e-3
    if sees_eight_back:
        assert moved(changed_outside) > 1e-3
    else:
        assert moved(changed_outside) < 1e-5  # float rounding of batched matmuls only


def test_sinks_take_a_share_of_the_softmax(tiny_model: GptOssNumpyModel) -> None:
    config = tiny_model.config
    group = config.num_attention_heads // config.num_key_value_heads
    queries = np.zeros((1, config.num_attention_heads, config.head_dim), dtype=np.float32)
    keys = np.zeros((1, config.num_key_value_heads, config.head_dim), dtype=np.float32)
    values = np.ones((1, config.num_key_value_heads, config.head_dim), dtype=np.float32)
    sinks = np.array([-1e9, 0.0, math.log(3.0), 5.0][: config.num_attention_heads], dtype=np.float32)
    out = tiny_model._attend(queries, keys, values, np.array([0]), np.array([0]), sinks, 0)
    per_head = out.reshape(config.num_attention_heads, config.head_dim)[:, 0]
    # One key with logit 0 against a sink logit s: the key keeps 1 / (1 + e^s) of the mass.
    np.testing.assert_allclose(per_head, 1 / (1 + np.exp(sinks.astype(np.float64))), rtol=1e-6)
    assert group >= 1


def test_yarn_frequencies_of_the_published_config() -> None:
    published = {
        "head_dim": 64,
        "rope_theta": 150000,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "original_max_position_embeddings": 4096,
            "truncate": False,
        },
    }
    config = ModelConfig.from_dict(
        {
            **published,
            "num_hidden_layers": 2,
            "hidden_size": 2880,
            "intermediate_size": 2880,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "num_local_experts": 32,
            "num_experts_per_tok": 4,
            "vocab_size": 201088,
            "sliding_window": 128,
        }
    )
    inv_freq, scale = rope_frequencies(config)
    expected, expected_scale = naive_yarn(published)
    assert scale == pytest.approx(1.3465735902799727)  # 0.1 * ln(32) + 1
    assert scale == pytest.approx(expected_scale)
    np.testing.assert_allclose(inv_freq, expected, rtol=1e-6)
    assert inv_freq[0] == pytest.approx(1.0)  # fastest dimension: extrapolated (unchanged)
    assert inv_freq[-1] == pytest.approx(150000 ** (-62 / 64) / 32, rel=1e-5)  # slowest: interpolated


def test_published_sizes_are_refused_by_the_cpu_model(tmp_path: Path, tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    config.update(num_hidden_layers=24, num_local_experts=32, hidden_size=2880, intermediate_size=2880)
    config.pop("layer_types")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="numpy reference engine takes checkpoints up to"):
        GptOssNumpyModel.from_checkpoint(tmp_path)


def test_chunked_prefill_equals_one_pass(tiny_model: GptOssNumpyModel, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = _tokens(40, seed=5)
    whole = tiny_model.forward([Segment(tokens, tiny_model.new_cache(64))], all_logits=True)[0]
    monkeypatch.setattr(numpy_model, "QUERY_CHUNK", 3)  # chunks that straddle the window of 8
    chunked = tiny_model.forward([Segment(tokens, tiny_model.new_cache(64))], all_logits=True)[0]
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


def test_a_long_prompt_in_pieces_equals_one_prefill(tiny_model: GptOssNumpyModel) -> None:
    tokens = _tokens(300, seed=6)
    whole = tiny_model.forward([Segment(tokens, tiny_model.new_cache(512))])[0]
    cache = tiny_model.new_cache(512)
    tiny_model.forward([Segment(tokens[:170], cache)])
    pieces = tiny_model.forward([Segment(tokens[170:], cache)])[0]
    np.testing.assert_allclose(pieces, whole, rtol=1e-4, atol=1e-4)
