"""gpt-oss checkpoints in the Hugging Face layout: reading, checking, and a tiny random one for tests.

The published repositories (`openai/gpt-oss-20b`, `-120b`) hold `config.json` (`model_type: gpt_oss`,
MXFP4 quantization), `model-*.safetensors` shards with `model.safetensors.index.json`, and
`tokenizer.json`. Experts are MXFP4 (`*_blocks`/`*_scales` uint8); everything else is BF16.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from gptoss_runtime.mxfp4 import encode_mxfp4
from gptoss_runtime.tokenizer import (
    HARMONY_SPECIAL_TOKENS,
    TOKENIZER_FILE_NAME,
    Tokenizer,
    build_tiny_tokenizer,
)

CONFIG_FILE_NAME: Final = "config.json"
INDEX_FILE_NAME: Final = "model.safetensors.index.json"
SINGLE_FILE_NAME: Final = "model.safetensors"
MANIFEST_FILE_NAME: Final = ".gptoss-manifest.json"
MANIFEST_VERSION: Final = 1
IMITATES_KEY: Final = "gptoss_imitates"

ImitatedModel = Literal["gpt-oss-20b", "gpt-oss-120b"]

# (num_hidden_layers, num_local_experts) of the published models, to name a checkpoint without the
# IMITATES_KEY field.
_PUBLISHED_SHAPES: Final[dict[tuple[int, int], str]] = {(24, 32): "gpt-oss-20b", (36, 128): "gpt-oss-120b"}

_HEADER_LENGTH_BYTES: Final = 8
_MAX_HEADER_BYTES: Final = 100 * 1024 * 1024
_HASH_CHUNK_BYTES: Final = 8 * 1024 * 1024

_DTYPE_ITEM_BYTES: Final = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1, "I8": 1, "I32": 4, "I64": 8, "BOOL": 1}
_NUMPY_DTYPES: Final[dict[str, npt.DTypeLike]] = {
    "F16": np.float16,
    "F32": np.float32,
    "U8": np.uint8,
    "I8": np.int8,
    "I32": np.int32,
    "I64": np.int64,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """The weights folder is incomplete, corrupt, or not a gpt-oss checkpoint; the message names the file."""


class ChecksumMismatchError(CheckpointError):
    """A downloaded file differs from the checksum its source published (`path` is the file)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


# --------------------------------------------------------------------------------------------------
# safetensors files (written and read here because numpy has no bfloat16)
# --------------------------------------------------------------------------------------------------


def float32_to_bfloat16_bits(values: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """Round float32 to bfloat16 (nearest, ties to even) and return the raw 16-bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def bfloat16_bits_to_float32(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class StoredTensor:
    """A tensor to write: `data` holds float32 values for BF16/F32, integers for integer dtypes."""

    dtype: str
    data: npt.NDArray[Any]


def write_safetensors(path: Path, tensors: Mapping[str, StoredTensor]) -> None:
    """Write a safetensors file (tensors in name order, 8-byte aligned header)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    payloads: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        payload = _tensor_bytes(tensor)
        header[name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.data.shape),
            "data_offsets": [offset, offset + len(payload)],
        }
        payloads.append(payload)
        offset += len(payload)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with Path(path).open("wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for payload in payloads:
            handle.write(payload)


def _tensor_bytes(tensor: StoredTensor) -> bytes:
    if tensor.dtype == "BF16":
        return float32_to_bfloat16_bits(tensor.data).astype("<u2").tobytes()
    numpy_dtype = _NUMPY_DTYPES.get(tensor.dtype)
    if numpy_dtype is None:
        raise ValueError(f"unsupported safetensors dtype {tensor.dtype!r}")
    return np.ascontiguousarray(tensor.data, dtype=np.dtype(numpy_dtype).newbyteorder("<")).tobytes()


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; raises CheckpointError if the file is truncated or corrupt."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(_HEADER_LENGTH_BYTES)
            if len(prefix) < _HEADER_LENGTH_BYTES:
                raise CheckpointError(f"{path} is truncated ({size} bytes): delete it and fetch the weights again")
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length > min(_MAX_HEADER_BYTES, size - _HEADER_LENGTH_BYTES):
                raise CheckpointError(
                    f"{path} has a corrupt header (declares {header_length} header bytes in a {size}-byte "
                    "file): delete it and fetch the weights again"
                )
            header = json.loads(handle.read(header_length))
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} has a header that is not JSON: delete it and fetch it again") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a header that is not a JSON object")
    data_end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0)
    expected = _HEADER_LENGTH_BYTES + header_length + data_end
    if size != expected:
        raise CheckpointError(
            f"{path} has {size} bytes but its header describes {expected}: the file is truncated or corrupt; "
            "delete it and fetch the weights again"
        )
    return header


def iter_safetensors(path: Path, names: Iterable[str] | None = None) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """Yield (name, array) from one file; BF16 becomes float32, other dtypes keep their numpy type."""
    header = read_safetensors_header(path)
    with path.open("rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(_HEADER_LENGTH_BYTES))
    data_start = _HEADER_LENGTH_BYTES + header_length
    wanted = set(names) if names is not None else None
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    for name, entry in header.items():
        if name == "__metadata__" or (wanted is not None and name not in wanted):
            continue
        start, end = (data_start + int(offset) for offset in entry["data_offsets"])
        shape = tuple(int(dim) for dim in entry["shape"])
        chunk = np.array(raw[start:end])
        dtype = str(entry["dtype"])
        if dtype == "BF16":
            array: npt.NDArray[Any] = bfloat16_bits_to_float32(chunk.view("<u2")).reshape(shape)
        elif dtype in _NUMPY_DTYPES:
            array = chunk.view(np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<")).reshape(shape)
        else:
            raise CheckpointError(f"{path}: tensor {name} has dtype {dtype}, which this reader does not support")
        yield name, array
    del raw


def load_checkpoint_tensors(directory: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a checkpoint folder, by name (BF16 as float32, MXFP4 blocks/scales as uint8)."""
    tensors: dict[str, npt.NDArray[Any]] = {}
    for shard in _shard_files(Path(directory)):
        tensors.update(iter_safetensors(Path(directory) / shard))
    return tensors


# --------------------------------------------------------------------------------------------------
# checking a weights folder
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    directory: Path
    model_name: str | None  # gpt-oss-20b / gpt-oss-120b (or what a tiny checkpoint imitates)
    num_hidden_layers: int
    num_local_experts: int
    num_experts_per_tok: int
    hidden_size: int
    vocab_size: int
    shard_files: tuple[str, ...]
    total_bytes: int
    config: dict[str, Any] = field(repr=False)

    @property
    def is_tiny(self) -> bool:
        return IMITATES_KEY in self.config


def read_config(directory: Path) -> dict[str, Any]:
    """`config.json` of a gpt-oss checkpoint, checked for the fields the runtime relies on."""
    path = Path(directory) / CONFIG_FILE_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the weights folder must hold a gpt-oss checkpoint's {CONFIG_FILE_NAME}"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not readable JSON: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    if config.get("model_type") != "gpt_oss":
        raise CheckpointError(
            f"{path}: model_type is {config.get('model_type')!r}, expected 'gpt_oss' (point the weights at "
            "openai/gpt-oss-20b or openai/gpt-oss-120b)"
        )
    quantization = config.get("quantization_config")
    if not isinstance(quantization, dict) or quantization.get("quant_method") != "mxfp4":
        raise CheckpointError(f"{path}: quantization_config.quant_method must be 'mxfp4' (the published MXFP4 weights)")
    required_ints = (
        "num_hidden_layers",
        "num_local_experts",
        "num_experts_per_tok",
        "hidden_size",
        "intermediate_size",
        "head_dim",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
    )
    for key in required_ints:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{path}: {key} must be a positive integer, got {value!r}")
    return config


def expected_tensor_names(config: Mapping[str, Any]) -> list[str]:
    """The tensor names of a gpt-oss checkpoint in the Hugging Face layout."""
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for layer in range(int(config["num_hidden_layers"])):
        prefix = f"model.layers.{layer}"
        names += [f"{prefix}.input_layernorm.weight", f"{prefix}.post_attention_layernorm.weight"]
        names += [f"{prefix}.self_attn.{proj}_proj.{kind}" for proj in "qkvo" for kind in ("weight", "bias")]
        names += [f"{prefix}.self_attn.sinks", f"{prefix}.mlp.router.weight", f"{prefix}.mlp.router.bias"]
        names += [
            f"{prefix}.mlp.experts.{proj}_{kind}"
            for proj in ("gate_up_proj", "down_proj")
            for kind in ("blocks", "scales", "bias")
        ]
    return names


def _read_index(directory: Path) -> dict[str, str]:
    index_path = directory / INDEX_FILE_NAME
    if not index_path.is_file():
        if (directory / SINGLE_FILE_NAME).is_file():
            header = read_safetensors_header(directory / SINGLE_FILE_NAME)
            return {name: SINGLE_FILE_NAME for name in header if name != "__metadata__"}
        raise CheckpointError(
            f"{index_path} is missing (and there is no single {SINGLE_FILE_NAME}): the weights are incomplete"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index_path} is not a safetensors index (needs a weight_map): {error}") from error
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: weight_map must map tensor names to file names")
    return {str(name): str(file_name) for name, file_name in weight_map.items()}


def _shard_files(directory: Path) -> list[str]:
    return sorted(set(_read_index(directory).values()))


def verify_checkpoint(directory: Path) -> CheckpointInfo:
    """Check that a weights folder holds a complete gpt-oss checkpoint without reading the tensors.

    Reads config.json and the safetensors index, then each shard's header: every shard the index names
    must exist with exactly the size its header describes, and every expected tensor must be listed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"the weights folder {directory} does not exist")
    config = read_config(directory)
    weight_map = _read_index(directory)
    missing = [name for name in expected_tensor_names(config) if name not in weight_map]
    if missing:
        raise CheckpointError(
            f"{directory / INDEX_FILE_NAME} lacks {len(missing)} expected tensors (first: {missing[0]}): "
            "the checkpoint is not a complete gpt-oss checkpoint"
        )
    shards = sorted(set(weight_map.values()))
    total_bytes = 0
    for shard in shards:
        path = directory / shard
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the index names it; fetch the weights again")
        header = read_safetensors_header(path)
        absent = [name for name, file_name in weight_map.items() if file_name == shard and name not in header]
        if absent:
            raise CheckpointError(f"{path} lacks the tensor {absent[0]} that the index places in it")
        total_bytes += path.stat().st_size
    if not (directory / TOKENIZER_FILE_NAME).is_file():
        raise CheckpointError(f"{directory / TOKENIZER_FILE_NAME} is missing: the weights folder needs the tokenizer")
    return CheckpointInfo(
        directory=directory,
        model_name=checkpoint_model_name(config),
        num_hidden_layers=int(config["num_hidden_layers"]),
        num_local_experts=int(config["num_local_experts"]),
        num_experts_per_tok=int(config["num_experts_per_tok"]),
        hidden_size=int(config["hidden_size"]),
        vocab_size=int(config["vocab_size"]),
        shard_files=tuple(shards),
        total_bytes=total_bytes,
        config=config,
    )


def checkpoint_model_name(config: Mapping[str, Any]) -> str | None:
    """gpt-oss-20b / gpt-oss-120b for the published shapes or a tiny checkpoint's `gptoss_imitates`."""
    imitates = config.get(IMITATES_KEY)
    if isinstance(imitates, str):
        return imitates
    shape = (config.get("num_hidden_layers"), config.get("num_local_experts"))
    return _PUBLISHED_SHAPES.get(shape)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# sha256 manifest (written by the fetcher after a download, checked before serving)
#
# The checksums are computed and checked once, by the fetcher, right after the download: each file's
# sha256 (and git blob id) against the ETag the Hub recorded for it (an LFS file's ETag is its sha256, a
# small file's is its git blob id). The completion marker then records that the manifest was verified, and
# a server start checks only sizes against the manifest: re-hashing 13 or 65 GB on every start would cost
# minutes of the startup budget and prove nothing the fetcher has not already proven.
# --------------------------------------------------------------------------------------------------


def _manifest_candidates(directory: Path) -> list[Path]:
    """Files covered by the manifest: everything except hidden paths (the manifest, the completion
    marker, huggingface_hub's .cache)."""
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files.append(path)
    return files


def sha256_file(path: Path) -> str:
    return file_digests(path)[0]


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    sha256 = hashlib.sha256()
    git_blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            sha256.update(chunk)
            git_blob.update(chunk)
    return sha256.hexdigest(), git_blob.hexdigest()


@dataclass(frozen=True)
class ManifestSummary:
    """What `write_manifest` recorded: files, bytes, and how many matched a checksum from the source."""

    files: int
    total_bytes: int
    verified_files: int


def write_manifest(directory: Path) -> Path:
    """Write `<directory>/.gptoss-manifest.json`: {"version": 1, "files": {relative path: {size, sha256}}}."""
    directory = Path(directory)
    write_verified_manifest(directory, {})
    return directory / MANIFEST_FILE_NAME


def write_verified_manifest(directory: Path, source_etags: Mapping[str, str]) -> ManifestSummary:
    """Hash every file once, check it against the source's ETag when one is known, write the manifest.

    `source_etags` maps relative paths to the ETag the download recorded: 64 hex digits are a sha256 (LFS
    files), 40 a git blob id (small files); anything else (a mirror's own tag) is not a checksum and is
    skipped. A mismatch raises CheckpointError naming the file; nothing is written then.
    """
    directory = Path(directory)
    files: dict[str, dict[str, Any]] = {}
    verified = 0
    for path in _manifest_candidates(directory):
        relative = path.relative_to(directory).as_posix()
        sha256, git_blob = file_digests(path)
        expected = _etag_checksum(source_etags.get(relative))
        if expected is not None:
            if expected not in (sha256, git_blob):
                raise ChecksumMismatchError(
                    f"{path} does not match the checksum its source published ({expected}): the download is "
                    "corrupt; fetch it again",
                    path,
                )
            verified += 1
        files[relative] = {"size": path.stat().st_size, "sha256": sha256}
    manifest_path = directory / MANIFEST_FILE_NAME
    manifest_path.write_text(
        json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return ManifestSummary(len(files), sum(int(entry["size"]) for entry in files.values()), verified)


def _etag_checksum(etag: str | None) -> str | None:
    """The checksum an ETag carries (sha256 or git blob id, lower-case hex), or None."""
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"').lower()
    if len(value) in (40, 64) and all(ch in "0123456789abcdef" for ch in value):
        return value
    return None


def check_manifest(directory: Path, *, verify_hashes: bool = True) -> int:
    """Check every file the manifest lists (size, and sha256 unless `verify_hashes` is False).

    Returns the number of files checked; raises CheckpointError naming the first missing or changed file.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError as error:
        raise CheckpointError(f"{manifest_path} is missing: the weights were not completely fetched") from error
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path} is corrupt: {error}; fetch the weights again") from error
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path} has an unknown format (version {manifest.get('version')!r})")
    for relative, expected in sorted(files.items()):
        path = directory / relative
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {MANIFEST_FILE_NAME}); fetch the weights again")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(
                f"{path} has {size} bytes, the manifest says {expected['size']}: fetch the weights again"
            )
        if verify_hashes and sha256_file(path) != expected["sha256"]:
            raise CheckpointError(f"{path} does not match its sha256 in {MANIFEST_FILE_NAME}: fetch the weights again")
    return len(files)


# --------------------------------------------------------------------------------------------------
# the tiny random checkpoint
# --------------------------------------------------------------------------------------------------

_TINY_SHAPES: Final[dict[str, dict[str, int]]] = {
    "gpt-oss-20b": {"num_hidden_layers": 4, "num_local_experts": 8},
    "gpt-oss-120b": {"num_hidden_layers": 6, "num_local_experts": 16},
}
TINY_SLIDING_WINDOW: Final = 8
_TINY_QUANTIZATION_CONFIG: Final = {
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
    "quant_method": "mxfp4",
}


def tiny_config(imitates: ImitatedModel, tokenizer: Tokenizer) -> dict[str, Any]:
    """config.json of a tiny checkpoint: the real keys of the published config, small sizes."""
    if imitates not in _TINY_SHAPES:
        raise ValueError(f"imitates must be one of {sorted(_TINY_SHAPES)}, got {imitates!r}")
    shape = _TINY_SHAPES[imitates]
    layers = shape["num_hidden_layers"]
    vocab_size = -(-tokenizer.vocab_size // 64) * 64  # padded like the real 201088
    return {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": tokenizer.token_id("<|return|>"),
        "experts_per_token": 4,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initial_context_length": 128,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_types": ["sliding_attention" if layer % 2 == 0 else "full_attention" for layer in range(layers)],
        "max_position_embeddings": 4096,
        "model_type": "gpt_oss",
        "num_attention_heads": 4,
        "num_experts_per_tok": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": 2,
        "num_local_experts": shape["num_local_experts"],
        "output_router_logits": False,
        "pad_token_id": tokenizer.token_id("<|endoftext|>"),
        "quantization_config": dict(_TINY_QUANTIZATION_CONFIG),
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 128,
            "rope_type": "yarn",
            "truncate": False,
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": TINY_SLIDING_WINDOW,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.55.0.dev0",
        "use_cache": True,
        "vocab_size": vocab_size,
        IMITATES_KEY: imitates,
    }


def _tiny_tensors(config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, StoredTensor]:
    hidden = int(config["hidden_size"])
    inter = int(config["intermediate_size"])
    experts = int(config["num_local_experts"])
    heads, kv_heads, head_dim = (int(config[k]) for k in ("num_attention_heads", "num_key_value_heads", "head_dim"))
    vocab = int(config["vocab_size"])

    def normal(*shape: int, std: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def bf16(array: npt.NDArray[np.float32]) -> StoredTensor:
        return StoredTensor("BF16", array)

    tensors = {
        "model.embed_tokens.weight": bf16(normal(vocab, hidden, std=1.0)),
        "model.norm.weight": bf16(1.0 + normal(hidden, std=0.1)),
        "lm_head.weight": bf16(normal(vocab, hidden, std=hidden**-0.5)),
    }
    for layer in range(int(config["num_hidden_layers"])):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.input_layernorm.weight"] = bf16(1.0 + normal(hidden, std=0.1))
        tensors[f"{prefix}.post_attention_layernorm.weight"] = bf16(1.0 + normal(hidden, std=0.1))
        for proj, out_features in (("q", heads * head_dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim)):
            tensors[f"{prefix}.self_attn.{proj}_proj.weight"] = bf16(normal(out_features, hidden, std=hidden**-0.5))
            tensors[f"{prefix}.self_attn.{proj}_proj.bias"] = bf16(normal(out_features, std=0.1))
        tensors[f"{prefix}.self_attn.o_proj.weight"] = bf16(
            normal(hidden, heads * head_dim, std=(heads * head_dim) ** -0.5)
        )
        tensors[f"{prefix}.self_attn.o_proj.bias"] = bf16(normal(hidden, std=0.1))
        tensors[f"{prefix}.self_attn.sinks"] = bf16(normal(heads, std=1.0))
        tensors[f"{prefix}.mlp.router.weight"] = bf16(normal(experts, hidden, std=hidden**-0.5))
        tensors[f"{prefix}.mlp.router.bias"] = bf16(normal(experts, std=0.1))
        # Experts as stored: rows are output features, 32-value blocks run along the input features.
        gate_up_blocks, gate_up_scales = encode_mxfp4(normal(experts, 2 * inter, hidden, std=2.0 * hidden**-0.5))
        down_blocks, down_scales = encode_mxfp4(normal(experts, hidden, inter, std=inter**-0.5))
        tensors[f"{prefix}.mlp.experts.gate_up_proj_blocks"] = StoredTensor("U8", gate_up_blocks)
        tensors[f"{prefix}.mlp.experts.gate_up_proj_scales"] = StoredTensor("U8", gate_up_scales)
        tensors[f"{prefix}.mlp.experts.gate_up_proj_bias"] = bf16(normal(experts, 2 * inter, std=0.1))
        tensors[f"{prefix}.mlp.experts.down_proj_blocks"] = StoredTensor("U8", down_blocks)
        tensors[f"{prefix}.mlp.experts.down_proj_scales"] = StoredTensor("U8", down_scales)
        tensors[f"{prefix}.mlp.experts.down_proj_bias"] = bf16(normal(experts, hidden, std=0.1))
    return tensors


def _tokenizer_config(tokenizer: Tokenizer) -> dict[str, Any]:
    added = {
        str(tokenizer.token_id(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in HARMONY_SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|return|>",
        "extra_special_tokens": {},
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def make_tiny_checkpoint(directory: Path, imitates: ImitatedModel = "gpt-oss-20b", seed: int = 0) -> Path:
    """Write a tiny random gpt-oss checkpoint (about 1-2 MB) in the Hugging Face layout; returns `directory`.

    Same file names, tensor names, dtypes and shape rules as the published repositories: BF16
    non-expert tensors, MXFP4 experts, two shards plus `model.safetensors.index.json`, `tokenizer.json`
    (a small byte-level BPE with the harmony special tokens), `tokenizer_config.json` and
    `generation_config.json`. `config.json` adds `gptoss_imitates` naming the model it stands for.
    The output is a pure function of (imitates, seed).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_json = build_tiny_tokenizer().to_str(pretty=True)
    tokenizer = Tokenizer.from_json(tokenizer_json)
    config = tiny_config(imitates, tokenizer)
    tensors = _tiny_tensors(config, np.random.default_rng(seed))

    layers = int(config["num_hidden_layers"])
    shard_names = ("model-00000-of-00001.safetensors", "model-00001-of-00001.safetensors")
    first_half = {f"model.layers.{layer}." for layer in range(layers // 2)}

    def shard_of(name: str) -> str:
        in_first = name in ("model.embed_tokens.weight",) or any(name.startswith(p) for p in first_half)
        return shard_names[0] if in_first else shard_names[1]

    weight_map = {name: shard_of(name) for name in sorted(tensors)}
    for shard in shard_names:
        write_safetensors(directory / shard, {n: t for n, t in tensors.items() if weight_map[n] == shard})
    total_size = sum(len(_tensor_bytes(tensor)) for tensor in tensors.values())
    _write_json(directory / INDEX_FILE_NAME, {"metadata": {"total_size": total_size}, "weight_map": weight_map})
    _write_json(directory / CONFIG_FILE_NAME, config)
    (directory / TOKENIZER_FILE_NAME).write_text(tokenizer_json, encoding="utf-8")
    _write_json(directory / "tokenizer_config.json", _tokenizer_config(tokenizer))
    _write_json(
        directory / "generation_config.json",
        {
            "bos_token_id": tokenizer.token_id("<|startoftext|>"),
            "do_sample": True,
            "eos_token_id": [
                tokenizer.token_id("<|return|>"),
                tokenizer.token_id("<|endoftext|>"),
                tokenizer.token_id("<|call|>"),
            ],
            "pad_token_id": tokenizer.token_id("<|endoftext|>"),
            "transformers_version": "4.55.0.dev0",
        },
    )
    return directory


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "CONFIG_FILE_NAME",
    "IMITATES_KEY",
    "INDEX_FILE_NAME",
    "MANIFEST_FILE_NAME",
    "CheckpointError",
    "CheckpointInfo",
    "ChecksumMismatchError",
    "ImitatedModel",
    "ManifestSummary",
    "StoredTensor",
    "check_manifest",
    "checkpoint_model_name",
    "expected_tensor_names",
    "file_digests",
    "load_checkpoint_tensors",
    "make_tiny_checkpoint",
    "read_config",
    "read_safetensors_header",
    "verify_checkpoint",
    "write_manifest",
    "write_safetensors",
    "write_verified_manifest",
]
