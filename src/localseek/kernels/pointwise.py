"""The native row steps between matmuls (pointwise.c): residual add + RMSNorm, gated activation.

On CPU, torch 2.13's F.rms_norm is composite (~6 ops, ~40 us for one 1536-wide row) and the
gated activation is two ops; a decode step of a 28-layer model runs 57 norms and 28
activations, ~3 ms of a ~65 ms step on R1-1.5B (2 cores). Float32 only: bf16 activations keep
torch's ops, whose rounding points the bf16 paths are tested against.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from localseek.kernels.build import bind
from localseek.kernels.isa import compiled_isa

_NORM_ARGS = [ctypes.c_void_p] * 3 + [ctypes.c_int64] + [ctypes.c_void_p] * 2
_NORM_ARGS += [ctypes.c_int64] * 2 + [ctypes.c_float]
_ACT_ARGS = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_int]
# The activations the C code computes, by GatedMLP's names (HF's hidden_act values).
ACTIVATIONS = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_tanh": 1}


class PointwiseKernel:
    """add_rms_norm and gated_act on contiguous float32 CPU tensors."""

    def __init__(self, norm: ctypes._CFuncPtr, act: ctypes._CFuncPtr, variant: str):
        self._norm = norm  # localseek_add_rms_norm, typed by bind
        self._act = act  # localseek_gated_act
        self.variant = variant

    @staticmethod
    def handles(*tensors: torch.Tensor | None) -> bool:
        """Whether the kernel takes these tensors (None: an absent optional input)."""
        return all(
            t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous())
            for t in tensors
        )

    def add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(rms_norm(x + residual) * weight, x + residual), or (rms_norm(x) * weight, None)
        without a residual; None if the kernel refused. The sum is a new tensor: neither
        input is written. weight is [dim], or [n, dim] for x [..., n, dim] (per-head norms)."""
        dim = x.shape[-1]
        weight_rows = weight.numel() // dim
        if weight.shape[-1] != dim or (x.numel() // dim) % weight_rows:
            return None
        out = torch.empty_like(x)
        total = None if residual is None else torch.empty_like(x)
        status = self._norm(
            x.data_ptr(), None if residual is None else residual.data_ptr(), weight.data_ptr(),
            weight_rows, None if total is None else total.data_ptr(), out.data_ptr(),
            x.numel() // dim, dim, eps,
        )  # fmt: skip
        return None if status else (out, total)

    def gated_act(self, gate_up: torch.Tensor, act: str) -> torch.Tensor | None:
        """act(gate) * up for gate_up [..., 2 * inter] -> [..., inter]; None if `act` is not
        one the C code has (the caller then uses torch)."""
        code = ACTIVATIONS.get(act)
        if code is None:
            return None
        inter = gate_up.shape[-1] // 2
        out = gate_up.new_empty(*gate_up.shape[:-1], inter)
        status = self._act(gate_up.data_ptr(), out.data_ptr(), out.numel() // inter, inter, code)
        return None if status else out


@functools.cache
def pointwise_kernel(variant: str | None = None) -> PointwiseKernel | None:
    """The kernels in the best variant this CPU runs (or the named one), or None."""
    norm = bind("pointwise", "localseek_add_rms_norm", _NORM_ARGS, variant)
    act = bind("pointwise", "localseek_gated_act", _ACT_ARGS, variant)
    if norm is None or act is None:
        return None
    return PointwiseKernel(norm, act, compiled_isa("pointwise", variant))
