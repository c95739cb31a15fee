"""What the lean decode steps (llama_lean.py, gemma3_lean.py) share: when a model qualifies,
how one is attached, the plan fields every layer has, each KV group's tables, and the try of
the whole step in one C call. Projections go through `GGUFLinear.multiply` directly, without
the module call.

A lean step calls the native kernels the modules would call (`gguf_matmul`, `pointwise`, paged
decode attention), in the same order, from one loop with the layers' modules and constants
resolved at attach: the same bits as the modules, without their per-call Python bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from localseek.kernels.paged_attention import DecodeAttentionKernel, decode_attention_kernel
from localseek.kernels.pointwise import ACTIVATIONS, PointwiseKernel, pointwise_kernel
from localseek.models.attention import AttentionMetadata
from localseek.models.gguf_linear import GGUFLinear

StepBuilder = Callable[[torch.nn.Module, PointwiseKernel, DecodeAttentionKernel], Callable]


def attach(model: torch.nn.Module, build: StepBuilder) -> str | None:
    """Set model.native_decode = build(model, kernels...) when the model qualifies; returns
    why not, or None when attached."""
    reason = unsupported(model)
    if reason is not None:
        return reason
    pointwise, attention = pointwise_kernel(), decode_attention_kernel()
    if pointwise is None or attention is None:
        return "the native pointwise or decode-attention kernel is not available here"
    model.native_decode = build(model, pointwise, attention)
    return None


def unsupported(model: torch.nn.Module) -> str | None:
    """Why the model's layers cannot take a lean step (float32, CPU, every projection a
    GGUFLinear, an activation pointwise.c has), or None."""
    if model.dtype != torch.float32:
        return f"the model computes in {model.dtype}; the lean step is float32 only"
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
        if not all(isinstance(m, GGUFLinear) for m in linears):
            return f"layer {i} has projections that are not GGUF blocks"
        if mlp.act_name not in ACTIVATIONS:
            return f"activation {mlp.act_name!r} has no native kernel"
        if layer.input_layernorm.weight.device.type != "cpu":
            return "the model is not on the CPU"
    return None


def layer_parts(layer: torch.nn.Module) -> dict:
    """The fields every lean layer plan reads from a decoder layer: its four projections,
    head counts, attention scale and window, activation and norm epsilon."""
    attn, mlp = layer.self_attn, layer.mlp
    return {
        "qkv": attn.qkv_proj,
        "o": attn.o_proj,
        "gate_up": mlp.gate_up_proj,
        "down": mlp.down_proj,
        "heads": attn.num_heads,
        "kv_heads": attn.num_kv_heads,
        "scale": attn.scale,
        "window": attn.sliding_window,
        "act": mlp.act_name,
        "eps": layer.input_layernorm.eps,
    }


class GroupTables:
    """Per step: layer i's metadata and its KV group's block tables and lengths (int32),
    converted once per group, as the attention module does for each call."""

    def __init__(self, meta: AttentionMetadata):
        self.meta = meta
        self._done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, i: int) -> tuple[AttentionMetadata, torch.Tensor, torch.Tensor]:
        layer_meta = self.meta.for_layer(i)
        tables = self._done.get(id(layer_meta))
        if tables is None:
            tables = self._done[id(layer_meta)] = (
                layer_meta.block_tables.to(torch.int32).contiguous(),
                layer_meta.context_lens.to(torch.int32).contiguous(),
            )
        return (layer_meta, *tables)

    def groups(
        self, layers: int
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], list[int]] | None:
        """For the one-call step: each KV group's (slots, block tables, lengths) once, and
        each layer's group index; None when a group's slots are not contiguous int64."""
        index: dict[int, int] = {}
        groups, layer_groups = [], []
        for i in range(layers):
            layer_meta, block_tables, lens = self(i)
            slots = layer_meta.slot_mapping
            if slots.dtype != torch.int64 or not slots.is_contiguous():
                return None
            g = index.setdefault(id(layer_meta), len(groups))
            if g == len(groups):
                groups.append((slots, block_tables, lens))
            layer_groups.append(g)
        return groups, layer_groups


def one_call(
    step: Callable | None,
    pointwise: PointwiseKernel,
    h: torch.Tensor,
    ropes: list[tuple[torch.Tensor, torch.Tensor]],
    kv_caches: list[tuple[torch.Tensor, ...]],
    tables: GroupTables,
) -> torch.Tensor | None:
    """A lean step's whole decode in one C call (kernels/gguf_decode_step.py), or None when
    the step has none here or it declines (the caller's loop then runs): the rotary tables and
    caches float32 and contiguous, each KV group's slots contiguous int64. h is the caller's
    to check."""
    tensors = [t for pair in (*ropes, *kv_caches) for t in pair]
    if step is None or not pointwise.handles(*tensors):
        return None
    groups = tables.groups(len(kv_caches))
    return None if groups is None else step(h, ropes, kv_caches, *groups)
