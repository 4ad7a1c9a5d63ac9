"""MXFP4 (OCP Microscaling, E2M1 elements with one E8M0 scale per 32 values) as gpt-oss stores experts.

Layout of the Hugging Face gpt-oss checkpoint: `*_blocks` is uint8 `[..., G, 16]` (two 4-bit codes per
byte, the low nibble holds the even element), `*_scales` is uint8 `[..., G]` (value `2**(s - 127)`), and
each group of 32 decoded values runs along the last (input) dimension, so the decoded tensor is
`[..., G * 32]`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BLOCK_SIZE = 32
BYTES_PER_BLOCK = BLOCK_SIZE // 2
SCALE_BIAS = 127
SCALE_NAN = 255  # E8M0 reserves all-ones for NaN

# E2M1 magnitudes for the codes 0..7; bit 3 of a code is the sign.
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
E2M1_VALUES = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES])  # indexed by the 4-bit code
_E2M1_MAX_EXPONENT = 2  # 6.0 = 1.5 * 2**2


class Mxfp4Error(ValueError):
    """The blocks or scales do not have the MXFP4 layout."""


def decode_mxfp4(blocks: npt.NDArray[np.uint8], scales: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Dequantize `blocks` [..., G, 16] and `scales` [..., G] to float32 [..., G * 32]."""
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise Mxfp4Error(f"blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise Mxfp4Error(f"blocks must have shape [..., G, {BYTES_PER_BLOCK}], got {list(blocks.shape)}")
    if scales.shape != blocks.shape[:-1]:
        raise Mxfp4Error(
            f"scales shape {list(scales.shape)} must equal blocks shape without its last axis {list(blocks.shape[:-1])}"
        )
    codes = np.empty((*blocks.shape[:-1], BLOCK_SIZE), dtype=np.uint8)
    codes[..., 0::2] = blocks & 0x0F  # low nibble first
    codes[..., 1::2] = blocks >> 4
    values = E2M1_VALUES[codes]
    exponents = scales.astype(np.int32) - SCALE_BIAS
    multipliers = np.ldexp(np.float32(1.0), np.minimum(exponents, SCALE_BIAS)).astype(np.float32)
    multipliers[scales == SCALE_NAN] = np.nan
    decoded = values * multipliers[..., None]
    result: npt.NDArray[np.float32] = decoded.reshape(*blocks.shape[:-2], blocks.shape[-2] * BLOCK_SIZE)
    return result.astype(np.float32)


def encode_mxfp4(values: npt.ArrayLike) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Quantize float values [..., N] (N a multiple of 32) to (blocks [..., N/32, 16], scales [..., N/32]).

    The shared exponent follows the OCP spec: floor(log2(max |v|)) minus E2M1's largest exponent (2);
    elements round to the nearest E2M1 value and saturate at +-6.
    """
    array = np.asarray(values, dtype=np.float32)
    if array.ndim < 1 or array.shape[-1] % BLOCK_SIZE != 0:
        raise Mxfp4Error(f"the last axis must be a multiple of {BLOCK_SIZE}, got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise Mxfp4Error("values must be finite to encode as MXFP4")
    grouped = array.reshape(*array.shape[:-1], array.shape[-1] // BLOCK_SIZE, BLOCK_SIZE)
    amax = np.abs(grouped).max(axis=-1)
    safe_amax = np.where(amax > 0, amax, 1.0)
    exponents = np.floor(np.log2(safe_amax)).astype(np.int32) - _E2M1_MAX_EXPONENT
    exponents = np.where(amax > 0, exponents, 0)
    exponents = np.clip(exponents, -SCALE_BIAS, SCALE_BIAS)
    scaled = grouped / np.ldexp(np.float32(1.0), exponents)[..., None]
    magnitude_codes = np.abs(np.abs(scaled)[..., None] - E2M1_MAGNITUDES).argmin(axis=-1).astype(np.uint8)
    sign_bits = ((scaled < 0) & (magnitude_codes > 0)).astype(np.uint8) << 3
    codes = magnitude_codes | sign_bits
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    scales = (exponents + SCALE_BIAS).astype(np.uint8)
    return blocks, scales
