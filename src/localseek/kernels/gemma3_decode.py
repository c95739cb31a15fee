"""The fused Gemma 3 decode step (gemma3_decode.c): the C structs it reads, and its binding.

The model side (models/gemma3_native.py) fills one `Gemma3Layer` per decoder layer at load
with pointers into the model's own tensors, then per step only the cache views, rotary tables
and the residual stream change.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from localseek.kernels.build import bind


class Q8Linear(ctypes.Structure):
    """y = scale * (w . (x * balance)); w int8 [n, k], scale [n] and balance [k] float32;
    packed: the same weights as [n / 16][k / 2][16][2] for batches (int8_dot.h), or None."""

    _fields_ = [
        ("w", ctypes.c_void_p),
        ("packed", ctypes.c_void_p),
        ("scale", ctypes.c_void_p),
        ("balance", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("k", ctypes.c_int64),
    ]


class Gemma3Layer(ctypes.Structure):
    _fields_ = [
        ("qkv", Q8Linear),
        ("o", Q8Linear),
        ("gate_up", Q8Linear),
        ("down", Q8Linear),
        ("input_norm", ctypes.c_void_p),
        ("post_attention_norm", ctypes.c_void_p),
        ("pre_feedforward_norm", ctypes.c_void_p),
        ("post_feedforward_norm", ctypes.c_void_p),
        ("qk_norm", ctypes.c_void_p),
        ("k_cache", ctypes.c_void_p),
        ("v_cache", ctypes.c_void_p),
        ("group", ctypes.c_int64),
        ("rope", ctypes.c_int64),
        ("window", ctypes.c_int64),
    ]


class CacheView(ctypes.Structure):
    """One KV cache group's slots, block tables and context lengths for the step."""

    _fields_ = [
        ("slots", ctypes.c_void_p),
        ("block_tables", ctypes.c_void_p),
        ("context_lens", ctypes.c_void_p),
        ("table_stride", ctypes.c_int64),
    ]


class RopeTable(ctypes.Structure):
    _fields_ = [("cos", ctypes.c_void_p), ("signed_sin", ctypes.c_void_p)]


class Gemma3Dims(ctypes.Structure):
    _fields_ = [
        ("layers", ctypes.c_int64),
        ("hidden", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("intermediate", ctypes.c_int64),
        ("block_size", ctypes.c_int64),
        ("eps", ctypes.c_float),
        ("attn_scale", ctypes.c_float),
    ]


_ARGTYPES = [
    ctypes.POINTER(Gemma3Dims),
    ctypes.POINTER(Gemma3Layer),
    ctypes.POINTER(CacheView),
    ctypes.POINTER(RopeTable),
    ctypes.c_void_p,
    ctypes.c_int64,
]


@dataclass(frozen=True)
class Gemma3DecodeKernel:
    run: ctypes._CFuncPtr  # (dims, layers, views, ropes, x, rows) -> 0, or 1 if refused
    max_rows: int  # the most rows per call it is fast for on this CPU


@functools.cache
def gemma3_decode_kernel() -> Gemma3DecodeKernel | None:
    """The fused step, or None when native kernels cannot be built here (see build.load)."""
    run = bind("gemma3_decode", "localseek_gemma3_decode", _ARGTYPES)
    max_rows = bind("gemma3_decode", "localseek_gemma3_decode_max_rows", [])
    return None if run is None or max_rows is None else Gemma3DecodeKernel(run, max_rows())
