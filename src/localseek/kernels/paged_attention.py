"""The native paged decode-attention kernel (paged_decode_attention.c) behind a torch-shaped call.

Measured on the demo model at 16 decoding sequences (2 cores): the torch path's per-group
gathers, masks and SDPA calls took ~12 ms of a ~50 ms step; see docs/benchmarks-default-model.md
for what this kernel does to the step.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from localseek.kernels.build import DTYPE_CODES, bind
from localseek.kernels.isa import compiled_isa

_ARGTYPES = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 8 + [ctypes.c_float, ctypes.c_int]


class DecodeAttentionKernel:
    """Callable: attention of one query row per sequence over its paged K/V."""

    def __init__(self, fn: ctypes._CFuncPtr, variant: str):
        self._fn = fn  # localseek_paged_decode_attention, typed by bind
        self.variant = variant  # the instruction set the object was compiled for

    @staticmethod
    def handles(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
        """Whether these tensors fit the kernel (else the caller's torch path runs)."""
        return (
            q.device.type == "cpu"
            and q.dtype in DTYPE_CODES
            and k_cache.dtype == q.dtype == v_cache.dtype
            and k_cache.dim() == 4
            and k_cache.is_contiguous()
            and v_cache.is_contiguous()
            and q.shape[-1] == k_cache.shape[-1]
            and q.shape[-1] % 16 == 0
            and v_cache.shape[-1] % 16 == 0
            and max(q.shape[-1], v_cache.shape[-1]) <= 512
            and q.shape[1] % k_cache.shape[2] == 0
            and q.shape[1] // k_cache.shape[2] <= 16
        )

    def __call__(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
        scale: float,
        sliding_window: int | None,
    ) -> torch.Tensor | None:
        """q [S, q_heads, d]; caches [blocks, block_size, kv_heads, d|v_dim]; block_tables
        [S, max_blocks] int32; context_lens [S] int32 -> [S, q_heads, v_dim] in q's dtype, or
        None if the kernel refused the shapes (see `handles`)."""
        q = q.contiguous()
        tables = block_tables.to(torch.int32).contiguous()
        lens = context_lens.to(torch.int32).contiguous()
        seqs, q_heads, head_dim = q.shape
        _, block_size, kv_heads, v_dim = v_cache.shape
        out = q.new_empty(seqs, q_heads, v_dim)
        status = self._fn(
            q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(),
            lens.data_ptr(), out.data_ptr(), seqs, q_heads, kv_heads, head_dim, v_dim,
            block_size, tables.shape[1], sliding_window or 0, scale, DTYPE_CODES[q.dtype],
        )  # fmt: skip
        return None if status else out


@functools.cache
def decode_attention_kernel(variant: str | None = None) -> DecodeAttentionKernel | None:
    """The kernel in the best variant this CPU runs (or the named one), or None."""
    fn = bind("paged_decode_attention", "localseek_paged_decode_attention", _ARGTYPES, variant)
    if fn is None:
        return None
    return DecodeAttentionKernel(fn, compiled_isa("paged_decode_attention", variant))
