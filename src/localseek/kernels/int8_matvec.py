"""The native int8 matvec (int8_matvec.c): int8 weights x float32/bf16 activations, 1-4 rows.

Over one decode step's worth of the demo model's layer weights (72 matrices, ~100 MB int8),
measured on 2 cores: 6.7-6.8 ms against 7.9-8.5 ms for torch's `_weight_int8pack_mm`; with
the activation conversions done in C the demo's int8 batch-1 step went 24.0 -> 19.7 ms.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from localseek.kernels.build import DTYPE_CODES, bind
from localseek.kernels.isa import compiled_isa

MAX_ROWS = 4
_ARGTYPES = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int]


class Int8MatvecKernel:
    """Callable: (x * balance) @ (q8 * scale).T for 1-4 rows of x."""

    def __init__(self, fn: ctypes._CFuncPtr, variant: str):
        self._fn = fn  # localseek_int8_matvec, typed by bind
        self.variant = variant  # the instruction set the object was compiled for

    @staticmethod
    def handles(x: torch.Tensor, q8: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype in DTYPE_CODES
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
            x.data_ptr(), y.data_ptr(), rows, n, q8.shape[1], DTYPE_CODES[x.dtype],
        )  # fmt: skip
        return None if status else y


@functools.cache
def int8_matvec_kernel(variant: str | None = None) -> Int8MatvecKernel | None:
    """The kernel in the best variant this CPU runs (or the named one), or None."""
    fn = bind("int8_matvec", "localseek_int8_matvec", _ARGTYPES, variant)
    if fn is None:
        return None
    return Int8MatvecKernel(fn, compiled_isa("int8_matvec", variant))
