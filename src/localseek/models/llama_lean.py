"""Llama / Qwen2 decode steps in one lean loop over the native kernels, for GGUF blocks on CPU.

The per-module forward of a decode step spends ~7 ms of a 28-layer model's step on Python and
torch bookkeeping on 2 cores (module calls, attention metadata, tensor checks, allocations),
measured on a 28-layer model with tiny matrices; this loop (lean_decode.py) ~4.5 ms. The
results are bitwise the modules' (the tests compare them): R1-1.5B's decode step on an AVX2
EPYC went ~59 -> ~56 ms. Where kernels/gguf_decode_step.c builds, the same loop runs as one C
call (the same bits; the tiny-matrix step 4.9 -> 1.8 ms, R1-1.5B's ~58 -> ~53 ms, one stream);
the Python loop stays for the calls it declines.

Attached at load by `LlamaForCausalLM.attach_fused_decode` when the model qualifies
(`lean_decode.unsupported`); decode-only steps then run here. A prefill, a mixed step, or any
call a kernel refuses runs the ordinary modules instead (returning None part-way is safe: the
K/V written so far are written again with the same values).
"""

from __future__ import annotations

import torch

from localseek.kernels.gguf_decode_step import LayerSpec, gguf_decode_step
from localseek.kernels.paged_attention import DecodeAttentionKernel
from localseek.kernels.pointwise import PointwiseKernel
from localseek.models import lean_decode
from localseek.models.attention import AttentionMetadata
from localseek.models.lean_decode import GroupTables, layer_parts


def attach(model: torch.nn.Module) -> str | None:
    """Give a Llama-family model its lean decode step; returns why not, or None when attached."""
    return lean_decode.attach(model, LeanLlamaDecode)


class LeanLlamaDecode:
    """Callable (h, cos, sin, kv_caches, meta) -> final-normed hidden, or None to decline."""

    def __init__(
        self, model: torch.nn.Module, pointwise: PointwiseKernel, attention: DecodeAttentionKernel
    ):
        self.pointwise, self.attention = pointwise, attention
        self.layers = [
            LayerSpec(
                **layer_parts(layer),
                input_norm=layer.input_layernorm.scale(),
                post_norm=layer.post_attention_layernorm.scale(),
            )
            for layer in model.model.layers
        ]
        self.final_norm = model.model.norm.scale()
        self.final_eps = model.model.norm.eps
        # the same loop in C when the kernel builds here (one call a step, the same bits)
        self.native = gguf_decode_step(self.layers, self.final_norm, self.final_eps)

    def __call__(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, ...]],
        meta: AttentionMetadata,
    ) -> torch.Tensor | None:
        pw = self.pointwise
        if not pw.handles(h, cos, sin):
            return None
        tables, tokens = GroupTables(meta), h.shape[0]
        out = lean_decode.one_call(self.native, pw, h, [(cos, sin)], kv_caches, tables)
        if out is not None:
            return out
        residual = None
        for i, (plan, (k_cache, v_cache)) in enumerate(zip(self.layers, kv_caches, strict=True)):
            layer_meta, block_tables, lens = tables(i)
            # input norm: the first layer's residual is the embedding itself
            done = pw.add_rms_norm(h, residual, plan.input_norm, plan.eps)
            if done is None:
                return None
            x, residual = done if residual is not None else (done[0], h)
            qkv = plan.qkv.multiply(x)
            q = None if qkv is None else pw.rope_store(
                qkv, plan.heads, plan.kv_heads, cos, sin, layer_meta.slot_mapping, k_cache, v_cache
            )  # fmt: skip
            out = None if q is None else self.attention(
                q, k_cache, v_cache, block_tables, lens, plan.scale, plan.window
            )  # fmt: skip
            y = None if out is None else plan.o.multiply(out.view(tokens, -1))
            done = None if y is None else pw.add_rms_norm(y, residual, plan.post_norm, plan.eps)
            if done is None:
                return None
            x, residual = done
            gate_up = plan.gate_up.multiply(x)
            act = None if gate_up is None else pw.gated_act(gate_up, plan.act)
            h = None if act is None else plan.down.multiply(act)
            if h is None:
                return None
        done = pw.add_rms_norm(h, residual, self.final_norm, self.final_eps)
        return None if done is None else done[0]
