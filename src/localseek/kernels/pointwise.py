"""The native row steps between matmuls (pointwise.c): residual add + RMSNorm, gated
activation, and rotary + KV-cache write after a fused q/k/v projection.

On CPU, torch 2.13's F.rms_norm is composite (~6 ops, ~20 us for one 1536-wide row), the gated
activation is two ops and a layer's rotary and cache writes ~20; a decode step of a 28-layer
model runs 57 norms, 28 activations and 28 rotations. On R1-1.5B (AVX2 EPYC, 2 cores) the
step went 64.9 -> 59.2 ms with these. Float32 only: bf16 activations keep torch's ops, whose
rounding points the bf16 paths are tested against.
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
_ROPE_ARGS = [ctypes.c_void_p] + [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 3 + [ctypes.c_int64]
_ROPE_ARGS += [ctypes.c_void_p] * 3
# The activations the C code computes, by GatedMLP's names (HF's hidden_act values).
ACTIVATIONS = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_tanh": 1}


class PointwiseKernel:
    """add_rms_norm and gated_act on contiguous float32 CPU tensors."""

    def __init__(self, fns: dict[str, ctypes._CFuncPtr], variant: str):
        self._norm = fns["localseek_add_rms_norm"]  # typed by bind
        self._act = fns["localseek_gated_act"]
        self._rope = fns["localseek_rope_store"]
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

    def rope_store(
        self,
        qkv: torch.Tensor,
        heads: int,
        kv_heads: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        slots: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor | None:
        """q [tokens, heads, dim] rotated neox-style, with k (rotated) and v written to the
        paged caches [blocks, block_size, kv_heads, dim] at `slots` (int64); None if refused
        (a slot outside the cache included), nothing written then."""
        tokens, dim = qkv.shape[0], k_cache.shape[-1]
        if (
            not self.handles(qkv, cos, sin, k_cache, v_cache)
            or slots.dtype != torch.int64
            or not slots.is_contiguous()
            or qkv.shape[-1] != (heads + 2 * kv_heads) * dim
            or k_cache.shape[-2:] != (kv_heads, dim)
            or v_cache.shape != k_cache.shape
            or cos.shape != sin.shape
            or cos.shape[0] != tokens
        ):
            return None
        q = qkv.new_empty(tokens, heads, dim)
        num_slots = k_cache.shape[0] * k_cache.shape[1]
        status = self._rope(
            qkv.data_ptr(), tokens, heads, kv_heads, dim, cos.shape[-1], cos.data_ptr(),
            sin.data_ptr(), slots.data_ptr(), num_slots, q.data_ptr(), k_cache.data_ptr(),
            v_cache.data_ptr(),
        )  # fmt: skip
        return None if status else q


_SIGNATURES = {
    "localseek_add_rms_norm": _NORM_ARGS,
    "localseek_gated_act": _ACT_ARGS,
    "localseek_rope_store": _ROPE_ARGS,
}


@functools.cache
def pointwise_kernel(variant: str | None = None) -> PointwiseKernel | None:
    """The kernels in the best variant this CPU runs (or the named one), or None."""
    fns = {name: bind("pointwise", name, args, variant) for name, args in _SIGNATURES.items()}
    if any(fn is None for fn in fns.values()):
        return None
    return PointwiseKernel(fns, compiled_isa("pointwise", variant))
