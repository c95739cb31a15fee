"""The native GGUF block-format matmul (gguf_matmul.c) behind a torch-shaped call.

Weights stay in the file's quantized blocks (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K) and are
multiplied as they are: a decode step then reads ~4.5-6.5 bits per weight instead of the 32
a dequantized float32 copy costs, which is what bounds single-stream speed on a CPU.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from localseek.kernels.build import DTYPE_CODES, bind
from localseek.kernels.isa import compiled_isa

_T = GGMLQuantizationType
# The block formats the kernel multiplies directly (what Q4_0, Q4_K_M, Q5_K_M, Q6_K and Q8_0
# files are made of).
PACKED_TYPES: frozenset[int] = frozenset(
    int(t) for t in (_T.Q4_0, _T.Q5_0, _T.Q8_0, _T.Q4_K, _T.Q5_K, _T.Q6_K)
)
MAX_PARTS = 8
_ARGTYPES = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
_ARGTYPES += [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_ARGTYPES += [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]


def row_bytes(ggml_type: int, cols: int) -> int:
    values, nbytes = GGML_QUANT_SIZES[_T(ggml_type)]
    return cols // values * nbytes


def block_values(ggml_type: int) -> int:
    return GGML_QUANT_SIZES[_T(ggml_type)][0]


@dataclass(frozen=True)
class PartTable:
    """The weight parts of one projection as the C call takes them, built once at load."""

    num_parts: int
    types: ctypes.Array
    pointers: ctypes.Array
    rows: ctypes.Array
    out_features: int
    keep: tuple[torch.Tensor, ...]  # the blocks the pointers point into, kept alive


def part_table(parts: Sequence[tuple[int, torch.Tensor]]) -> PartTable:
    """parts: (ggml type, uint8 blocks [rows, row bytes]) in output order."""
    if not 1 <= len(parts) <= MAX_PARTS:
        raise ValueError(f"{len(parts)} parts; the kernel takes 1 to {MAX_PARTS}")
    blocks = tuple(data.contiguous() for _, data in parts)
    return PartTable(
        num_parts=len(parts),
        types=(ctypes.c_int32 * len(parts))(*(t for t, _ in parts)),
        pointers=(ctypes.c_void_p * len(parts))(*(b.data_ptr() for b in blocks)),
        rows=(ctypes.c_int64 * len(parts))(*(b.shape[0] for b in blocks)),
        out_features=sum(b.shape[0] for b in blocks),
        keep=blocks,
    )


class GGUFMatmulKernel:
    """Callable: x [N, K] float32/bf16 times the parts' weights -> [N, out_features]."""

    def __init__(self, fn: ctypes._CFuncPtr, variant: str):
        self._fn = fn  # localseek_gguf_matmul, typed by bind
        self.variant = variant

    @staticmethod
    def handles(ggml_type: int, cols: int) -> bool:
        return ggml_type in PACKED_TYPES and cols % block_values(ggml_type) == 0

    def __call__(self, x: torch.Tensor, table: PartTable, levels: int = 2) -> torch.Tensor | None:
        """x [N, K] -> [N, table.out_features] in x's dtype, or None if the kernel refused.

        levels, for calls of up to 4 rows: activations are multiplied as int8 per block of 256
        (or 32) values in one level (~8 bits, llama.cpp's Q8_K precision) or two (the second
        quantizes what the first missed, ~15 bits; ~1.3-1.5x the arithmetic, the same weight
        bytes). Larger calls dequantize each weight row to float32 once and multiply exactly."""
        if x.dtype not in DTYPE_CODES or x.device.type != "cpu":
            return None
        x = x.contiguous()
        n, k = x.shape
        out = x.new_empty(n, table.out_features)
        status = self._fn(
            x.data_ptr(), n, k, k, DTYPE_CODES[x.dtype], table.num_parts, table.types,
            table.pointers, table.rows, out.data_ptr(), table.out_features, levels,
        )  # fmt: skip
        return None if status else out


@functools.cache
def gguf_matmul_kernel(variant: str | None = None) -> GGUFMatmulKernel | None:
    """The kernel in the best variant this CPU runs (or the named one), or None."""
    fn = bind("gguf_matmul", "localseek_gguf_matmul", _ARGTYPES, variant)
    if fn is None:
        return None
    return GGUFMatmulKernel(fn, compiled_isa("gguf_matmul", variant))
