"""The native int8 matvec (int8_matvec.c): int8 weights x float32 activations, 1-4 rows.

Over one decode step's worth of the demo model's layer weights (72 matrices, ~100 MB int8),
measured on 2 cores: 6.7-6.8 ms against 7.9-8.5 ms for torch's `_weight_int8pack_mm`.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from localseek.kernels.build import load

MAX_ROWS = 4


class Int8MatvecKernel:
    def __init__(self, lib: ctypes.CDLL):
        fn = lib.localseek_int8_matvec
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
        fn.restype = ctypes.c_int
        self._fn = fn

    @staticmethod
    def handles(x: torch.Tensor, q8: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and 1 <= x.shape[0] <= MAX_ROWS
            and q8.dtype == torch.int8
            and q8.is_contiguous()
            and q8.shape[1] % 64 == 0
        )

    def __call__(self, x: torch.Tensor, q8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x [M, K] float32, q8 [N, K] int8, scale [N] float32 -> [M, N] float32."""
        x, scale = x.float().contiguous(), scale.float().contiguous()
        rows, n = x.shape[0], q8.shape[0]
        y = x.new_empty(rows, n)
        status = self._fn(
            q8.data_ptr(), scale.data_ptr(), x.data_ptr(), y.data_ptr(), rows, n, q8.shape[1]
        )
        if status:
            raise ValueError(f"int8_matvec refused x {tuple(x.shape)}, weight {tuple(q8.shape)}")
        return y


@functools.cache
def int8_matvec_kernel() -> Int8MatvecKernel | None:
    lib = load("int8_matvec")
    return None if lib is None else Int8MatvecKernel(lib)
