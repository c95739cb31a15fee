"""The native int8 matvec (int8_matvec.c): int8 weights x float32/bf16 activations, 1-4 rows.

Over one decode step's worth of the demo model's layer weights (72 matrices, ~100 MB int8),
measured on 2 cores: 6.7-6.8 ms against 7.9-8.5 ms for torch's `_weight_int8pack_mm`; with
the activation conversions done in C the demo's int8 batch-1 step went 24.0 -> 19.7 ms.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from localseek.kernels.build import load

MAX_ROWS = 4
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


class Int8MatvecKernel:
    def __init__(self, lib: ctypes.CDLL):
        fn = lib.localseek_int8_matvec
        fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int]
        fn.restype = ctypes.c_int
        self._fn = fn

    @staticmethod
    def handles(x: torch.Tensor, q8: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype in _DTYPES
            and 1 <= x.shape[0] <= MAX_ROWS
            and q8.dtype == torch.int8
            and q8.is_contiguous()
            and q8.shape[1] % 64 == 0
        )

    def __call__(
        self,
        x: torch.Tensor,
        q8: torch.Tensor,
        scale: torch.Tensor,
        balance: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """x [M, K] float32 or bf16, q8 [N, K] int8, scale [N] float32, balance [K] float32
        or None -> (x * balance) @ (q8 * scale[:, None]).T, [M, N] in x's dtype; None if the
        kernel refused (shapes `handles` rejects, or no memory for its activation copy)."""
        x = x.contiguous()
        rows, n = x.shape[0], q8.shape[0]
        y = x.new_empty(rows, n)
        status = self._fn(
            q8.data_ptr(), scale.data_ptr(), 0 if balance is None else balance.data_ptr(),
            x.data_ptr(), y.data_ptr(), rows, n, q8.shape[1], _DTYPES[x.dtype],
        )  # fmt: skip
        return None if status else y


@functools.cache
def int8_matvec_kernel() -> Int8MatvecKernel | None:
    lib = load("int8_matvec")
    return None if lib is None else Int8MatvecKernel(lib)
