"""Gemma 3 decode steps in one lean loop over the native kernels, for GGUF blocks on CPU.

The counterpart of llama_lean.py for the demo model (a Q4_K_M GGUF); see lean_decode.py. The
results are bitwise the modules' (the tests compare them). Gemma's sandwich norms fold into
the pointwise kernel's fused add + norm: x + post_ffw_norm(h) and the next layer's input norm
are one call, as are x + post_attn_norm(h) and the pre-feedforward norm. Per-head q/k norms
run before the rotary, which then takes each layer type's own frequencies; layers in the
sliding-window and full-attention KV groups read their own block tables. Where
kernels/gguf_decode_step.c builds, the same loop runs as one C call (the same bits; the demo's
step ~20.6 -> ~17.1 ms, one stream, AVX2 EPYC); the Python loop stays for what it declines.

Attached at load by `Gemma3ForCausalLM.attach_fused_decode` when the one-call int8 step
(gemma3_native.py) does not suit and the model is float32 with every projection a
`GGUFLinear`; decode-only steps then run here, anything else (or a refused call) through the
modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from localseek.kernels.gguf_decode_step import LayerSpec, gguf_decode_step
from localseek.kernels.paged_attention import DecodeAttentionKernel
from localseek.kernels.pointwise import PointwiseKernel
from localseek.models import lean_decode
from localseek.models.attention import AttentionMetadata
from localseek.models.gguf_linear import GGUFLinear
from localseek.models.lean_decode import GroupTables, layer_parts


@dataclass(frozen=True)
class _LayerPlan:
    input_norm: torch.Tensor  # float32 (weight + 1) [hidden]
    post_attn_norm: torch.Tensor
    pre_ffw_norm: torch.Tensor
    post_ffw_norm: torch.Tensor
    eps: float
    qk_norm: torch.Tensor  # [heads + kv_heads, head_dim]
    qk_eps: float
    qkv: GGUFLinear
    o: GGUFLinear
    gate_up: GGUFLinear
    down: GGUFLinear
    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    window: int | None
    layer_type: str
    act: str


def attach(model: torch.nn.Module) -> str | None:
    """Give a Gemma 3 model on GGUF blocks its lean decode step; why not, or None if attached."""
    return lean_decode.attach(model, LeanGemma3Decode)


class LeanGemma3Decode:
    """Callable (h, cos_sin, kv_caches, meta) -> the last layer's output (before the final
    norm, as Gemma3ForCausalLM.forward expects), or None to decline."""

    def __init__(
        self, model: torch.nn.Module, pointwise: PointwiseKernel, attention: DecodeAttentionKernel
    ):
        self.pointwise, self.attention = pointwise, attention
        self.layers = [
            _LayerPlan(
                **layer_parts(layer),
                input_norm=layer.input_layernorm.scale(),
                post_attn_norm=layer.post_attention_layernorm.scale(),
                pre_ffw_norm=layer.pre_feedforward_layernorm.scale(),
                post_ffw_norm=layer.post_feedforward_layernorm.scale(),
                qk_norm=layer.self_attn.qk_norm_scale(),
                qk_eps=layer.self_attn.q_norm.eps,
                head_dim=layer.self_attn.head_dim,
                layer_type=layer.self_attn.layer_type,
            )
            for layer in model.model.layers
        ]
        # the same loop in C when the kernel builds here (one call a step, the same bits)
        self.rope_order = sorted({plan.layer_type for plan in self.layers})
        self.native = gguf_decode_step([self._spec(plan) for plan in self.layers], None)

    def _spec(self, plan: _LayerPlan) -> LayerSpec:
        return LayerSpec(
            qkv=plan.qkv, o=plan.o, gate_up=plan.gate_up, down=plan.down,
            input_norm=plan.input_norm, post_norm=plan.pre_ffw_norm, eps=plan.eps,
            heads=plan.heads, kv_heads=plan.kv_heads, scale=plan.scale, window=plan.window,
            act=plan.act, attn_out_norm=plan.post_attn_norm, ffn_out_norm=plan.post_ffw_norm,
            qk_norm=plan.qk_norm, qk_eps=plan.qk_eps,
            rope=self.rope_order.index(plan.layer_type),
        )  # fmt: skip

    def __call__(
        self,
        h: torch.Tensor,
        cos_sin: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        kv_caches: list[tuple[torch.Tensor, ...]],
        meta: AttentionMetadata,
    ) -> torch.Tensor | None:
        pw = self.pointwise
        if not pw.handles(h):
            return None
        tokens = h.shape[0]
        # cos_sin holds (cat(cos, cos), cat(-sin, sin)) per layer type; rope_store takes the
        # halves and computes x1 cos - x2 sin, the same bits as x1 cos + x2 (-sin).
        ropes = {}
        for layer_type, (cos, signed_sin) in cos_sin.items():
            half = cos.shape[-1] // 2
            ropes[layer_type] = (cos[:, :half].contiguous(), signed_sin[:, half:].contiguous())
        tables = GroupTables(meta)
        order = [ropes[layer_type] for layer_type in self.rope_order]
        out = lean_decode.one_call(self.native, pw, h, order, kv_caches, tables)
        if out is not None:
            return out
        x = h
        done = pw.add_rms_norm(x, None, self.layers[0].input_norm, self.layers[0].eps)
        if done is None:
            return None
        normed = done[0]
        for i, (plan, (k_cache, v_cache)) in enumerate(zip(self.layers, kv_caches, strict=True)):
            layer_meta, block_tables, lens = tables(i)
            rope = ropes[plan.layer_type]
            attended = self._attend(
                plan, normed, (k_cache, v_cache), layer_meta, block_tables, lens, rope
            )
            y = None if attended is None else plan.o.multiply(attended.view(tokens, -1))
            y = None if y is None else pw.add_rms_norm(y, None, plan.post_attn_norm, plan.eps)
            done = None if y is None else pw.add_rms_norm(y[0], x, plan.pre_ffw_norm, plan.eps)
            if done is None:
                return None
            z, x = done
            gate_up = plan.gate_up.multiply(z)
            act = None if gate_up is None else pw.gated_act(gate_up, plan.act)
            y = None if act is None else plan.down.multiply(act)
            y = None if y is None else pw.add_rms_norm(y, None, plan.post_ffw_norm, plan.eps)
            if y is None:
                return None
            if i + 1 == len(self.layers):
                return x + y[0]
            nxt = self.layers[i + 1]
            done = pw.add_rms_norm(y[0], x, nxt.input_norm, nxt.eps)  # x + y, then its norm
            if done is None:
                return None
            normed, x = done
        return x

    def _attend(
        self,
        plan: _LayerPlan,
        normed: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        block_tables: torch.Tensor,
        lens: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor | None:
        """q/k/v projection, per-head q/k norms, rotary, K/V into the cache, attention."""
        pw, tokens = self.pointwise, normed.shape[0]
        qkv = plan.qkv.multiply(normed)
        if qkv is None:
            return None
        qk_width = (plan.heads + plan.kv_heads) * plan.head_dim
        qk = qkv[:, :qk_width].reshape(tokens, plan.heads + plan.kv_heads, plan.head_dim)
        done = pw.add_rms_norm(qk.contiguous(), None, plan.qk_norm, plan.qk_eps)
        if done is None:
            return None
        qkv = torch.cat((done[0].view(tokens, -1), qkv[:, qk_width:]), dim=1)
        cos, sin = rope
        q = pw.rope_store(qkv, plan.heads, plan.kv_heads, cos, sin, meta.slot_mapping, *kv_cache)
        if q is None:
            return None
        return self.attention(q, *kv_cache, block_tables, lens, plan.scale, plan.window)
