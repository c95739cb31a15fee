"""The whole Llama / Qwen2 decode step over GGUF blocks in one C call (gguf_decode_step.c).

A plan built once at load holds each layer's part tables, biases, norm scales and constants as
C structs; a call fills in what changes per step (cache pointers, each KV group's slots and
tables) and runs every layer without returning to Python.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from localseek.kernels.build import bind
from localseek.kernels.isa import compiled_isa
from localseek.kernels.pointwise import ACTIVATIONS

_P, _I64, _I32, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float


class _Linear(ctypes.Structure):
    _fields_ = [
        ("n_parts", _I64), ("types", _P), ("weights", _P), ("rows", _P),
        ("out_features", _I64), ("bias", _P), ("levels", _I32),
    ]  # fmt: skip


class _Layer(ctypes.Structure):
    _fields_ = [
        ("qkv", _Linear), ("o", _Linear), ("gate_up", _Linear), ("down", _Linear),
        ("input_norm", _P), ("post_norm", _P), ("eps", _F), ("scale", _F),
        ("heads", _I64), ("kv_heads", _I64), ("head_dim", _I64), ("window", _I64),
        ("act", _I32), ("group", _I32), ("k_cache", _P), ("v_cache", _P),
        ("num_slots", _I64), ("block_size", _I64),
    ]  # fmt: skip


class _Group(ctypes.Structure):
    _fields_ = [("slots", _P), ("block_tables", _P), ("context_lens", _P), ("table_stride", _I64)]


_ARGTYPES = [_P, _P, _I64, _I64, _P, _P, _I64, _P, _I64, _P, _I64, _P, _F]


@dataclass(frozen=True)
class LayerSpec:
    """What the step needs of one decoder layer (llama_lean's plan supplies it)."""

    qkv: object  # GGUFLinear
    o: object
    gate_up: object
    down: object
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    eps: float
    heads: int
    kv_heads: int
    scale: float
    window: int | None
    act: str


def _linear(module) -> tuple[_Linear, tuple]:
    table = module.table()
    bias = None if module.bias is None else module.bias.detach().float().contiguous()
    c = _Linear(
        table.num_parts, ctypes.addressof(table.types), ctypes.addressof(table.pointers),
        ctypes.addressof(table.rows), table.out_features,
        None if bias is None else bias.data_ptr(), module.levels,
    )  # fmt: skip
    return c, (table, bias)


class GGUFDecodeStep:
    """Callable (h, cos, sin, kv_caches, groups) -> final-normed hidden, or None (refused)."""

    def __init__(
        self, fn: ctypes._CFuncPtr, variant: str, layers: Sequence[LayerSpec],
        final_norm: torch.Tensor, final_eps: float,
    ):  # fmt: skip
        self._fn, self.variant = fn, variant
        self._layers = (_Layer * len(layers))()
        self._keep: list = [final_norm]
        for c, spec in zip(self._layers, layers, strict=True):
            for name in ("qkv", "o", "gate_up", "down"):
                linear, keep = _linear(getattr(spec, name))
                setattr(c, name, linear)
                self._keep.append(keep)
            self._keep += [spec.input_norm, spec.post_norm]
            c.input_norm, c.post_norm = spec.input_norm.data_ptr(), spec.post_norm.data_ptr()
            c.eps, c.scale, c.act = spec.eps, spec.scale, ACTIVATIONS[spec.act]
            c.heads, c.kv_heads, c.window = spec.heads, spec.kv_heads, spec.window or 0
        self._final = final_norm.data_ptr()
        self._final_eps = final_eps

    def __call__(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_caches: Sequence[tuple[torch.Tensor, ...]],
        groups: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        layer_groups: Sequence[int],
    ) -> torch.Tensor | None:
        """groups: (slots int64 [M], block tables int32 [M, stride], lengths int32 [M]) per KV
        group, all contiguous; layer_groups[i]: layer i's group. The caller checks dtypes
        (float32, contiguous) of h, cos, sin and the caches."""
        tokens, hidden = h.shape
        for c, (k_cache, v_cache), g in zip(self._layers, kv_caches, layer_groups, strict=True):
            c.k_cache, c.v_cache, c.group = k_cache.data_ptr(), v_cache.data_ptr(), g
            c.head_dim, c.block_size = k_cache.shape[-1], k_cache.shape[1]
            c.num_slots = k_cache.shape[0] * k_cache.shape[1]
        table = (_Group * len(groups))(
            *(_Group(s.data_ptr(), t.data_ptr(), n.data_ptr(), t.shape[1]) for s, t, n in groups)
        )
        out = torch.empty_like(h)
        status = self._fn(
            h.data_ptr(), out.data_ptr(), tokens, hidden, cos.data_ptr(), sin.data_ptr(),
            cos.shape[-1], self._layers, len(self._layers), table, len(groups), self._final,
            self._final_eps,
        )  # fmt: skip
        return None if status else out


@functools.cache
def _bound(variant: str | None) -> tuple[ctypes._CFuncPtr, str] | None:
    fn = bind("gguf_decode_step", "localseek_gguf_decode_step", _ARGTYPES, variant)
    return None if fn is None else (fn, compiled_isa("gguf_decode_step", variant))


def gguf_decode_step(
    layers: Sequence[LayerSpec], final_norm: torch.Tensor, final_eps: float,
    variant: str | None = None,
) -> GGUFDecodeStep | None:  # fmt: skip
    """The step for these layers in the best variant this CPU runs (or the named one), or
    None when the kernel cannot be had."""
    bound = _bound(variant)
    return None if bound is None else GGUFDecodeStep(*bound, layers, final_norm, final_eps)
