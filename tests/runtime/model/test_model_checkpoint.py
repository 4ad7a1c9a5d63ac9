"""The tiny checkpoint has the Hugging Face gpt-oss layout; verify_checkpoint and the manifest catch damage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from gptoss_runtime.checkpoint import (
    INDEX_FILE_NAME,
    MANIFEST_FILE_NAME,
    CheckpointError,
    bfloat16_bits_to_float32,
    check_manifest,
    expected_tensor_names,
    float32_to_bfloat16_bits,
    load_checkpoint_tensors,
    make_tiny_checkpoint,
    verify_checkpoint,
    write_manifest,
)
from gptoss_runtime.tokenizer import Tokenizer


def _config(directory: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((directory / "config.json").read_text())
    return config


def test_config_has_the_published_keys_and_names_the_imitated_model(tiny_dir: Path) -> None:
    config = _config(tiny_dir)
    assert config["model_type"] == "gpt_oss"
    assert config["architectures"] == ["GptOssForCausalLM"]
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    assert "model.layers.*.self_attn" in config["quantization_config"]["modules_to_not_convert"]
    assert config["gptoss_imitates"] == "gpt-oss-20b"
    assert config["layer_types"] == ["sliding_attention", "full_attention"] * (config["num_hidden_layers"] // 2)
    assert config["rope_scaling"]["rope_type"] == "yarn"
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    tokenizer = Tokenizer.from_dir(tiny_dir)
    assert config["eos_token_id"] == tokenizer.token_id("<|return|>")
    assert config["vocab_size"] >= tokenizer.vocab_size
    for key in ("swiglu_limit", "sliding_window", "rms_norm_eps", "rope_theta", "max_position_embeddings"):
        assert key in config
    generation = json.loads((tiny_dir / "generation_config.json").read_text())
    assert tokenizer.token_id("<|call|>") in generation["eos_token_id"]


def test_tensors_have_the_published_names_dtypes_and_shapes(tiny_dir: Path) -> None:
    config = _config(tiny_dir)
    index = json.loads((tiny_dir / INDEX_FILE_NAME).read_text())
    assert sorted(index["weight_map"]) == sorted(expected_tensor_names(config))
    assert len(set(index["weight_map"].values())) == 2
    experts, hidden, inter = config["num_local_experts"], config["hidden_size"], config["intermediate_size"]
    expected_u8 = {
        "model.layers.1.mlp.experts.gate_up_proj_blocks": [experts, 2 * inter, hidden // 32, 16],
        "model.layers.1.mlp.experts.gate_up_proj_scales": [experts, 2 * inter, hidden // 32],
        "model.layers.1.mlp.experts.down_proj_blocks": [experts, hidden, inter // 32, 16],
        "model.layers.1.mlp.experts.down_proj_scales": [experts, hidden, inter // 32],
    }
    seen: dict[str, tuple[str, list[int]]] = {}
    for shard in set(index["weight_map"].values()):
        # The safetensors library (not our reader) must accept the files.
        with safe_open(str(tiny_dir / shard), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                piece = handle.get_slice(name)
                seen[name] = (piece.get_dtype(), list(piece.get_shape()))
    for name, shape in expected_u8.items():
        assert seen[name] == ("U8", shape)
    assert seen["model.layers.1.mlp.experts.gate_up_proj_bias"] == ("BF16", [experts, 2 * inter])
    assert seen["model.layers.1.self_attn.sinks"] == ("BF16", [config["num_attention_heads"]])
    q_rows = config["num_attention_heads"] * config["head_dim"]
    assert seen["model.layers.1.self_attn.q_proj.weight"] == ("BF16", [q_rows, hidden])
    assert seen["model.embed_tokens.weight"] == ("BF16", [config["vocab_size"], hidden])
    assert seen["model.layers.1.mlp.router.weight"] == ("BF16", [experts, hidden])


def test_our_reader_matches_the_safetensors_library(tiny_dir: Path) -> None:
    ours = load_checkpoint_tensors(tiny_dir)
    index = json.loads((tiny_dir / INDEX_FILE_NAME).read_text())
    name = "model.layers.2.mlp.experts.down_proj_blocks"
    with safe_open(str(tiny_dir / index["weight_map"][name]), framework="numpy") as handle:
        np.testing.assert_array_equal(ours[name], handle.get_tensor(name))
    assert ours["model.norm.weight"].dtype == np.float32


def test_bfloat16_rounds_to_nearest_even() -> None:
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, 1.0 + 2**-9], dtype=np.float32)
    bits = float32_to_bfloat16_bits(values)
    assert [hex(b) for b in bits] == ["0x3f80", "0x3f80", "0x3f82", "0xc020", "0x3f80"]
    assert bfloat16_bits_to_float32(bits)[3] == -2.5


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path, tiny_dir: Path) -> None:
    again = make_tiny_checkpoint(tmp_path / "again", "gpt-oss-20b", seed=0)
    other = make_tiny_checkpoint(tmp_path / "other", "gpt-oss-20b", seed=1)
    for path in sorted(tiny_dir.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    shard = "model-00000-of-00001.safetensors"
    assert (other / shard).read_bytes() != (tiny_dir / shard).read_bytes()


def test_tiny_120b_is_bigger_and_named(tmp_path: Path, tiny_dir: Path) -> None:
    info = verify_checkpoint(make_tiny_checkpoint(tmp_path / "big", "gpt-oss-120b"))
    small = verify_checkpoint(tiny_dir)
    assert info.model_name == "gpt-oss-120b"
    assert small.model_name == "gpt-oss-20b"
    assert info.num_hidden_layers > small.num_hidden_layers
    assert info.num_local_experts > small.num_local_experts
    assert info.is_tiny


def test_unknown_imitation_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="imitates must be one of"):
        make_tiny_checkpoint(tmp_path, "gpt-oss-7b")  # type: ignore[arg-type]


@pytest.fixture
def damaged(tmp_path: Path, tiny_dir: Path) -> Path:
    copy = tmp_path / "weights"
    shutil.copytree(tiny_dir, copy)
    return copy


def test_verify_accepts_the_tiny_checkpoint(tiny_dir: Path) -> None:
    info = verify_checkpoint(tiny_dir)
    assert info.shard_files == ("model-00000-of-00001.safetensors", "model-00001-of-00001.safetensors")
    assert info.total_bytes == sum((tiny_dir / shard).stat().st_size for shard in info.shard_files)


def test_verify_names_a_missing_shard(damaged: Path) -> None:
    (damaged / "model-00001-of-00001.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00001-of-00001\.safetensors is missing"):
        verify_checkpoint(damaged)


def test_verify_names_a_truncated_shard(damaged: Path) -> None:
    shard = damaged / "model-00000-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model-00000-of-00001\.safetensors has \d+ bytes but"):
        verify_checkpoint(damaged)


def test_verify_names_a_wrong_model_type(damaged: Path) -> None:
    config = _config(damaged)
    config["model_type"] = "llama"
    (damaged / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type is 'llama', expected 'gpt_oss'"):
        verify_checkpoint(damaged)


def test_verify_names_a_missing_config_and_tokenizer(damaged: Path) -> None:
    (damaged / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is missing"):
        verify_checkpoint(damaged)
    (damaged / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        verify_checkpoint(damaged)


def test_verify_names_a_tensor_missing_from_the_index(damaged: Path) -> None:
    index = json.loads((damaged / INDEX_FILE_NAME).read_text())
    del index["weight_map"]["model.layers.3.mlp.experts.down_proj_scales"]
    (damaged / INDEX_FILE_NAME).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=re.escape("model.layers.3.mlp.experts.down_proj_scales")):
        verify_checkpoint(damaged)


def test_manifest_round_trip_and_damage(damaged: Path) -> None:
    (damaged / ".cache").mkdir()
    (damaged / ".cache" / "download.lock").write_text("x")  # hidden folders are not covered
    manifest = write_manifest(damaged)
    assert manifest.name == MANIFEST_FILE_NAME
    listed = json.loads(manifest.read_text())["files"]
    assert "config.json" in listed
    assert not any(name.startswith(".") for name in listed)
    assert check_manifest(damaged) == len(listed)

    shard = damaged / "model-00000-of-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    shard.write_bytes(bytes(data))
    assert check_manifest(damaged, verify_hashes=False) == len(listed)
    with pytest.raises(CheckpointError, match=r"model-00000-of-00001\.safetensors does not match its sha256"):
        check_manifest(damaged)

    shard.write_bytes(bytes(data[:-1]))
    with pytest.raises(CheckpointError, match="the manifest says"):
        check_manifest(damaged, verify_hashes=False)


def test_missing_manifest_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"manifest\.json is missing"):
        check_manifest(tmp_path)
