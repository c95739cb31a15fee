"""Dequantizing ggml blocks with torch (vectorized, chunked), for the common storage types.

The gguf package's numpy kernels run at ~10-25 M values/s here, which makes a 7B Q4_K_M file
take minutes to load; these run several times faster. Layouts follow ggml's block structs
(ggml-common.h); tests compare every kernel with `gguf.quants.dequantize`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as numpy_dequantize

_T = GGMLQuantizationType
_CHUNK_BLOCKS = 1 << 16  # blocks per kernel call: bounds the float32 temporaries to a few MB


def _f16(b: torch.Tensor) -> torch.Tensor:
    """[n, 2] little-endian half-float bytes -> [n, 1] float32."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n, k] bytes -> [n, 2k]: the k low nibbles, then the k high nibbles (ggml's order)."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


_BIT = torch.arange(8, dtype=torch.uint8)


def _bits(b: torch.Tensor) -> torch.Tensor:
    """[n, k] bytes -> [n, 8k] single bits, least significant first (a little-endian word)."""
    return ((b[:, :, None] >> _BIT) & 1).flatten(1)


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | q: int8[32]
    return b[:, 2:].contiguous().view(torch.int8).float() * _f16(b[:, :2])


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | qs: 32 x 4-bit, offset 8
    return _f16(b[:, :2]) * (_nibbles(b[:, 2:]).float() - 8)


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | m: f16 | qs: 32 x 4-bit
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).float() + _f16(b[:, 2:4])


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | qh: 32 high bits | qs: 32 low nibbles; offset 16
    q = _nibbles(b[:, 6:]) | (_bits(b[:, 2:6]) << 4)
    return _f16(b[:, :2]) * (q.float() - 16)


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | m: f16 | qh: 32 high bits | qs: 32 low nibbles
    q = _nibbles(b[:, 8:]) | (_bits(b[:, 4:8]) << 4)
    return _f16(b[:, :2]) * q.float() + _f16(b[:, 2:4])


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: 12 bytes -> 8 six-bit scales and 8 six-bit mins, [n, 8] each."""
    scales = torch.cat((s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)), dim=1)
    mins = torch.cat((s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)), dim=1)
    return scales.float(), mins.float()


def _k_low_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> [n, 8, 32]: sub-block 2c is chunk c's low nibbles, 2c+1 its high ones."""
    chunks = qs.view(-1, 4, 1, 32)
    return torch.cat((chunks & 0x0F, chunks >> 4), dim=2).view(-1, 8, 32)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | dmin: f16 | scales: 12 | qs: 128  (8 sub-blocks of 32)
    scales, mins = _k_scales(b[:, 4:16])
    q = _k_low_nibbles(b[:, 16:144]).float()
    out = (_f16(b[:, :2]) * scales)[:, :, None] * q - (_f16(b[:, 2:4]) * mins)[:, :, None]
    return out.flatten(1)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    # d: f16 | dmin: f16 | scales: 12 | qh: 32 | qs: 128; sub-block k's 5th bit is bit k of qh
    scales, mins = _k_scales(b[:, 4:16])
    high = (b[:, 16:48][:, None, :] >> _BIT[None, :, None]) & 1  # [n, 8, 32]
    q = (_k_low_nibbles(b[:, 48:176]) | (high << 4)).float()
    out = (_f16(b[:, :2]) * scales)[:, :, None] * q - (_f16(b[:, 2:4]) * mins)[:, :, None]
    return out.flatten(1)


_SHIFT_2 = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    # ql: 128 | qh: 64 | scales: int8[16] | d: f16. Two halves of 128 values; in each, value
    # group g (offset 32g) takes low nibbles from ql[l] / ql[32 + l] and 2 bits from qh[l].
    ql = b[:, :128].reshape(-1, 2, 2, 32)  # [n, half, part, l]
    qh = b[:, 128:192].reshape(-1, 2, 1, 32)
    low = torch.stack(
        (ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4), dim=2
    )  # [n, half, group, l]
    high = (qh >> _SHIFT_2[None, None, :, None]) & 3
    q = (low | (high << 4)).float() - 32
    scales = b[:, 192:208].contiguous().view(torch.int8).float().view(-1, 2, 4, 2, 1)
    scales = scales.expand(-1, 2, 4, 2, 16).reshape(-1, 2, 4, 32)  # 16 values per scale
    return (_f16(b[:, 208:210])[:, :, None, None] * scales * q).flatten(1)


TORCH_KERNELS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    int(_T.Q8_0): _q8_0,
    int(_T.Q4_0): _q4_0,
    int(_T.Q4_1): _q4_1,
    int(_T.Q5_0): _q5_0,
    int(_T.Q5_1): _q5_1,
    int(_T.Q4_K): _q4_k,
    int(_T.Q5_K): _q5_k,
    int(_T.Q6_K): _q6_k,
}


def dequantize_blocks(raw: np.ndarray, ggml_type: int) -> torch.Tensor:
    """uint8 [*rows, bytes per row] of `ggml_type` blocks -> float32 [*rows, values per row]."""
    kernel = TORCH_KERNELS.get(ggml_type)
    if kernel is None:
        return torch.from_numpy(numpy_dequantize(raw, _T(ggml_type)))
    block_elems, block_bytes = GGML_QUANT_SIZES[_T(ggml_type)]
    rows = raw.shape[:-1]
    blocks = torch.from_numpy(raw).view(-1, block_bytes)  # no copy: a view of the mapping
    out = torch.empty(blocks.shape[0], block_elems, dtype=torch.float32)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        stop = start + _CHUNK_BLOCKS
        out[start:stop] = kernel(blocks[start:stop])
    return out.view(*rows, raw.shape[-1] // block_bytes * block_elems)
