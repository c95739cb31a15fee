"""A whole Llama / Qwen2 or Gemma 3 decode step over GGUF blocks in one C call
(gguf_decode_step.c).

A plan built once at load holds each layer's part tables, biases, norm scales and constants as
C structs; a call fills in what changes per step (cache pointers, each KV group's slots and
tables) and runs every layer without returning to Python. Each projection's activation levels
are read when the plan is built: the loader sets them before it attaches the step.
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
        ("in_norm", _P), ("ffn_in_norm", _P), ("attn_out_norm", _P), ("ffn_out_norm", _P),
        ("qk_norm", _P), ("eps", _F), ("qk_eps", _F), ("scale", _F),
        ("heads", _I64), ("kv_heads", _I64), ("head_dim", _I64), ("window", _I64),
        ("act", _I32), ("group", _I32), ("rope", _I32), ("k_cache", _P), ("v_cache", _P),
        ("num_slots", _I64), ("block_size", _I64),
    ]  # fmt: skip


class _Group(ctypes.Structure):
    _fields_ = [("slots", _P), ("block_tables", _P), ("context_lens", _P), ("table_stride", _I64)]


_ARGTYPES = [_P, _P, _I64, _I64, _P, _P, _I64, _I64, _P, _I64, _P, _I64, _P, _F]


@dataclass(frozen=True)
class LayerSpec:
    """What the step needs of one decoder layer (the lean steps' plans supply it). Norm scales
    are float32 as the norm multiplies them (Gemma's weight + 1 included)."""

    qkv: object  # GGUFLinear
    o: object
    gate_up: object
    down: object
    input_norm: torch.Tensor
    post_norm: torch.Tensor  # before the MLP, on attention output + residual
    eps: float
    heads: int
    kv_heads: int
    scale: float
    window: int | None
    act: str
    # Gemma 3's: norms of the attention's and the MLP's outputs, per-head q/k norms
    # [heads + kv_heads, head_dim], and which rotary table the layer takes
    attn_out_norm: torch.Tensor | None = None
    ffn_out_norm: torch.Tensor | None = None
    qk_norm: torch.Tensor | None = None
    qk_eps: float = 0.0
    rope: int = 0


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


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
    """Callable (h, ropes, kv_caches, groups, layer_groups) -> the stack's output, or None
    (refused): final-normed, or h + residual when no final norm is given (Gemma's model
    applies its own)."""

    def __init__(
        self, fn: ctypes._CFuncPtr, variant: str, layers: Sequence[LayerSpec],
        final_norm: torch.Tensor | None, final_eps: float,
    ):  # fmt: skip
        self._fn, self.variant = fn, variant
        self._layers = (_Layer * len(layers))()
        self._keep: list = [final_norm]
        for c, spec in zip(self._layers, layers, strict=True):
            for name in ("qkv", "o", "gate_up", "down"):
                linear, keep = _linear(getattr(spec, name))
                setattr(c, name, linear)
                self._keep.append(keep)
            norms = (spec.input_norm, spec.post_norm, spec.attn_out_norm, spec.ffn_out_norm)
            self._keep += [*norms, spec.qk_norm]
            c.in_norm, c.ffn_in_norm, c.attn_out_norm, c.ffn_out_norm = map(_address, norms)
            c.qk_norm, c.qk_eps, c.rope = _address(spec.qk_norm), spec.qk_eps, spec.rope
            c.eps, c.scale, c.act = spec.eps, spec.scale, ACTIVATIONS[spec.act]
            c.heads, c.kv_heads, c.window = spec.heads, spec.kv_heads, spec.window or 0
        self._final = _address(final_norm)
        self._final_eps = final_eps

    def __call__(
        self,
        h: torch.Tensor,
        ropes: Sequence[tuple[torch.Tensor, torch.Tensor]],
        kv_caches: Sequence[tuple[torch.Tensor, ...]],
        groups: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        layer_groups: Sequence[int],
    ) -> torch.Tensor | None:
        """ropes: (cos, sin) [M, half] per rotary table (LayerSpec.rope picks one); groups:
        (slots int64 [M], block tables int32 [M, stride], lengths int32 [M]) per KV group;
        layer_groups[i]: layer i's group. The caller checks that h, the tables and the caches
        are float32 and contiguous and the rest contiguous; the caches' shapes are checked
        here, as pointwise.rope_store checks them for the loop."""
        tokens, hidden = h.shape
        for c, (k_cache, v_cache), g in zip(self._layers, kv_caches, layer_groups, strict=True):
            if (
                k_cache.dim() != 4
                or k_cache.shape[2] != c.kv_heads
                or v_cache.shape != k_cache.shape
            ):
                return None
            c.k_cache, c.v_cache, c.group = k_cache.data_ptr(), v_cache.data_ptr(), g
            c.head_dim, c.block_size = k_cache.shape[-1], k_cache.shape[1]
            c.num_slots = k_cache.shape[0] * k_cache.shape[1]
        table = (_Group * len(groups))(
            *(_Group(s.data_ptr(), t.data_ptr(), n.data_ptr(), t.shape[1]) for s, t, n in groups)
        )
        cos = (_P * len(ropes))(*(c.data_ptr() for c, _ in ropes))
        sin = (_P * len(ropes))(*(s.data_ptr() for _, s in ropes))
        out = torch.empty_like(h)
        status = self._fn(
            h.data_ptr(), out.data_ptr(), tokens, hidden, cos, sin, len(ropes),
            ropes[0][0].shape[-1], self._layers, len(self._layers), table, len(groups),
            self._final, self._final_eps,
        )  # fmt: skip
        return None if status else out


@functools.cache
def _bound(variant: str | None) -> tuple[ctypes._CFuncPtr, str] | None:
    fn = bind("gguf_decode_step", "localseek_gguf_decode_step", _ARGTYPES, variant)
    return None if fn is None else (fn, compiled_isa("gguf_decode_step", variant))


def gguf_decode_step(
    layers: Sequence[LayerSpec], final_norm: torch.Tensor | None, final_eps: float = 0.0,
    variant: str | None = None,
) -> GGUFDecodeStep | None:  # fmt: skip
    """The step for these layers in the best variant this CPU runs (or the named one), or
    None when the kernel cannot be had."""
    bound = _bound(variant)
    return None if bound is None else GGUFDecodeStep(*bound, layers, final_norm, final_eps)
