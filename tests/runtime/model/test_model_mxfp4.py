"""MXFP4 decoding against hand-computed values (OCP Microscaling: E2M1 codes, E8M0 scales)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gptoss_runtime.mxfp4 import Mxfp4Error, decode_mxfp4, encode_mxfp4

Floats = npt.NDArray[Any]


def _block(first_bytes: list[int], scale: int) -> tuple[Floats, Floats]:
    blocks = np.zeros((1, 16), dtype=np.uint8)
    blocks[0, : len(first_bytes)] = first_bytes
    return blocks, np.array([scale], dtype=np.uint8)


def test_low_nibble_is_the_even_element_and_scale_is_a_power_of_two() -> None:
    # 0x21: low nibble 1 (0.5) first, high nibble 2 (1.0) second; scale 128 -> x2.
    blocks, scales = _block([0x21], 128)
    decoded = decode_mxfp4(blocks, scales)
    assert decoded.dtype == np.float32
    assert decoded.shape == (32,)
    assert decoded[:2].tolist() == [1.0, 2.0]
    assert not decoded[2:].any()


def test_sign_bit_and_largest_magnitude() -> None:
    # 0xF9: low nibble 9 = -0.5, high nibble 15 = -6; 0x7B: 11 = -1.5, 7 = 6; scale 125 -> /4.
    blocks, scales = _block([0xF9, 0x7B], 125)
    assert decode_mxfp4(blocks, scales)[:4].tolist() == [-0.125, -1.5, -0.375, 1.5]


def test_every_e2m1_code() -> None:
    codes = np.arange(16, dtype=np.uint8)
    packed = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    blocks, scales = _block(packed.tolist(), 127)
    expected = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert decode_mxfp4(blocks, scales)[:16].tolist() == expected


def test_extreme_scales() -> None:
    blocks, _ = _block([0x04], 0)  # 2.0 * 2**-127
    assert decode_mxfp4(blocks, np.array([0], dtype=np.uint8))[0] == np.float32(2.0**-126)
    assert np.isnan(decode_mxfp4(blocks, np.array([255], dtype=np.uint8))[0])


def test_leading_axes_and_groups_are_kept() -> None:
    # [experts=2, rows=3, groups=2, 16] -> [2, 3, 64]; each group has its own scale.
    blocks = np.full((2, 3, 2, 16), 0x22, dtype=np.uint8)  # every element 1.0
    scales = np.zeros((2, 3, 2), dtype=np.uint8)
    scales[..., 0], scales[..., 1] = 127, 129
    decoded = decode_mxfp4(blocks, scales)
    assert decoded.shape == (2, 3, 64)
    assert (decoded[..., :32] == 1.0).all()
    assert (decoded[..., 32:] == 4.0).all()


def test_representable_values_round_trip_exactly() -> None:
    rng = np.random.default_rng(3)
    magnitudes = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)
    values = rng.choice(magnitudes, size=(4, 64)) * rng.choice([-1, 1], size=(4, 64))
    values[:, ::32] = 6.0  # pin each block's maximum so the scale is exactly 1
    values = values * np.float32(2.0**-3)
    blocks, scales = encode_mxfp4(values)
    assert blocks.shape == (4, 2, 16)
    assert scales.shape == (4, 2)
    np.testing.assert_array_equal(decode_mxfp4(blocks, scales), values)


def test_encoding_error_is_bounded_by_the_block_scale() -> None:
    values = np.random.default_rng(4).standard_normal((8, 128)).astype(np.float32)
    decoded = decode_mxfp4(*encode_mxfp4(values))
    block_max = np.abs(values.reshape(8, 4, 32)).max(axis=-1, keepdims=True)
    error = np.abs(decoded - values).reshape(8, 4, 32)
    assert (error <= 0.25 * block_max + 1e-7).all()


def test_bad_shapes_are_named() -> None:
    with pytest.raises(Mxfp4Error, match=r"\[\.\.\., G, 16\]"):
        decode_mxfp4(np.zeros((2, 8), dtype=np.uint8), np.zeros((2,), dtype=np.uint8))
    with pytest.raises(Mxfp4Error, match="scales shape"):
        decode_mxfp4(np.zeros((2, 16), dtype=np.uint8), np.zeros((3,), dtype=np.uint8))
    with pytest.raises(Mxfp4Error, match="multiple of 32"):
        encode_mxfp4(np.zeros((3, 31)))
