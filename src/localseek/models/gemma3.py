"""Gemma 3 text decoder (the embedded demo model): local/global attention over a paged KV cache.

Differences from Llama that this file carries: embeddings scaled by sqrt(hidden); RMSNorm
weights stored as (w - 1) (`offset=1`); RMS-normed queries and keys; a norm after attention and
around the MLP as well as before; GeGLU MLP (tanh GELU); local layers that see only the last
`sliding_window` tokens with their own rope base, every `pattern`-th layer global; optional
tanh soft-capping of the final logits. Gemma 3 replaced Gemma 2's attention-score soft-capping
with the q/k norms: `attn_logit_softcapping` is ignored, as transformers and llama.cpp do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from localseek.errors import ModelLoadError
from localseek.models.attention import AttentionMetadata, KVCacheSpec, paged_attention, write_kv
from localseek.models.layers import (
    Embedding,
    GatedMLP,
    Linear,
    RMSNorm,
    RotaryEmbedding,
    apply_rotary_full,
    build_rotary,
    rms_norm_rows,
    rope_parameters,
)
from localseek.models.llama import load_checkpoint
from localseek.models.sliding_windows import (
    FULL,
    SLIDING,
    gemma3_layer_types,
    gemma3_window,
)

_DEFAULT_THETA = {FULL: 1_000_000.0, SLIDING: 10_000.0}


@dataclass(frozen=True)
class Gemma3Args:
    """The subset of a Gemma 3 text config this decoder needs, validated once."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position: int
    hidden_act: str
    attention_bias: bool
    tie_word_embeddings: bool
    query_pre_attn_scalar: float
    final_softcap: float | None
    layer_types: tuple[str, ...]  # per layer: "sliding_attention" | "full_attention"
    sliding_window: int
    rope: Mapping[str, dict]  # layer type -> merged rope parameters


def _require(cfg: Mapping, key: str):
    value = cfg.get(key)
    if value is None:
        raise ModelLoadError(f"Gemma 3 config lacks required field {key!r}")
    return value


def gemma3_args(cfg: Mapping) -> Gemma3Args:
    """Gemma3Args from a Gemma3TextConfig dict (or a multimodal config's text_config)."""
    cfg = cfg.get("text_config") or cfg
    num_layers = int(_require(cfg, "num_hidden_layers"))
    heads = int(_require(cfg, "num_attention_heads"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise ModelLoadError(
            f"num_attention_heads {heads} is not a multiple of {kv_heads} kv heads"
        )
    head_dim = int(cfg.get("head_dim") or 256)
    layer_types = gemma3_layer_types(cfg, num_layers)
    if len(layer_types) != num_layers or set(layer_types) - {SLIDING, FULL}:
        raise ModelLoadError(
            f"Gemma 3 layer_types must list {num_layers} of {SLIDING!r}/{FULL!r}, "
            f"got {list(layer_types)}"
        )
    return Gemma3Args(
        vocab_size=int(_require(cfg, "vocab_size")),
        hidden_size=int(_require(cfg, "hidden_size")),
        intermediate_size=int(_require(cfg, "intermediate_size")),
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position=int(cfg.get("max_position_embeddings") or 131072),
        hidden_act=str(
            cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
        ),
        attention_bias=bool(cfg.get("attention_bias", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar") or head_dim),
        final_softcap=_optional_float(cfg.get("final_logit_softcapping")),
        layer_types=layer_types,
        sliding_window=gemma3_window(cfg),
        rope=_rope_by_layer_type(cfg),
    )


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def _rope_by_layer_type(cfg: Mapping) -> dict[str, dict]:
    """Rope parameters per layer type from either config generation.

    transformers 5 writes rope_parameters = {"full_attention": {...}, "sliding_attention": {...}};
    older configs have rope_theta (+ rope_scaling) for global layers and rope_local_base_freq.
    """
    params = cfg.get("rope_parameters") or {}
    if FULL in params or SLIDING in params:
        by_type = {t: dict(params.get(t) or {}) for t in (FULL, SLIDING)}
    else:
        by_type = {
            FULL: rope_parameters(
                {**cfg, "rope_theta": cfg.get("rope_theta", _DEFAULT_THETA[FULL])}
            ),
            SLIDING: {"rope_theta": cfg.get("rope_local_base_freq", _DEFAULT_THETA[SLIDING])},
        }
    for layer_type, merged in by_type.items():
        merged.setdefault("rope_theta", _DEFAULT_THETA[layer_type])
        merged["rope_type"] = merged.get("rope_type") or merged.get("type") or "default"
    return by_type


class Gemma3Attention(nn.Module):
    """GQA self-attention with q/k RMS norms, per-layer-type rope and an optional window."""

    def __init__(self, args: Gemma3Args, layer_idx: int, dtype: torch.dtype):
        super().__init__()
        self.num_heads, self.num_kv_heads = args.num_heads, args.num_kv_heads
        self.head_dim = args.head_dim
        self.layer_type = args.layer_types[layer_idx]
        self.sliding_window = args.sliding_window if self.layer_type == SLIDING else None
        self.q_size = args.num_heads * args.head_dim
        self.kv_size = args.num_kv_heads * args.head_dim
        bias = args.attention_bias
        self.qkv_proj = Linear(
            args.hidden_size, self.q_size + 2 * self.kv_size, bias=bias, dtype=dtype
        )
        self.o_proj = Linear(self.q_size, args.hidden_size, bias=bias, dtype=dtype)
        self.q_norm = RMSNorm(args.head_dim, args.rms_norm_eps, offset=1.0, dtype=dtype)
        self.k_norm = RMSNorm(args.head_dim, args.rms_norm_eps, offset=1.0, dtype=dtype)
        self.scale = args.query_pre_attn_scalar**-0.5
        self._qk_scale: torch.Tensor | None = None
        self._qk_scale_key: tuple | None = None

    def qk_norm_scale(self) -> torch.Tensor:
        """[num_heads + num_kv_heads, head_dim] float32: each head's norm multiplier.

        Queries and keys are normed (and rotated) in one call each instead of two.
        """
        q_scale, k_scale = self.q_norm.scale(), self.k_norm.scale()
        key = (id(q_scale), id(k_scale))
        if self._qk_scale is None or key != self._qk_scale_key:
            self._qk_scale = torch.cat(
                (q_scale.expand(self.num_heads, -1), k_scale.expand(self.num_kv_heads, -1))
            )
            self._qk_scale_key = key
        return self._qk_scale

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens = x.shape[0]
        qkv = self.qkv_proj(x)  # [num_tokens, q_size + 2 * kv_size]
        heads = self.num_heads + self.num_kv_heads
        qk = qkv[:, : self.q_size + self.kv_size].view(num_tokens, heads, self.head_dim)
        qk = rms_norm_rows(qk, self.qk_norm_scale(), self.q_norm.eps)
        cos, signed_sin = cos_sin[self.layer_type]  # [num_tokens, head_dim]
        qk = apply_rotary_full(qk, cos, signed_sin)  # [num_tokens, heads, head_dim]
        q, k = qk.split((self.num_heads, self.num_kv_heads), dim=1)
        v = qkv[:, self.q_size + self.kv_size :].view(num_tokens, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache
        write_kv(k_cache, k, meta.slot_mapping)
        write_kv(v_cache, v, meta.slot_mapping)
        out = paged_attention(
            q, k_cache, v_cache, meta, scale=self.scale, sliding_window=self.sliding_window
        )  # [num_tokens, num_heads, head_dim]
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class Gemma3DecoderLayer(nn.Module):
    """Sandwich-normed block: x + post_norm(attn(pre_norm(x))), then the same around the MLP."""

    def __init__(self, args: Gemma3Args, layer_idx: int, dtype: torch.dtype):
        super().__init__()
        hidden, eps = args.hidden_size, args.rms_norm_eps
        self.self_attn = Gemma3Attention(args, layer_idx, dtype)
        self.mlp = GatedMLP(hidden, args.intermediate_size, args.hidden_act, dtype=dtype)
        self.input_layernorm = RMSNorm(hidden, eps, offset=1.0, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(hidden, eps, offset=1.0, dtype=dtype)
        self.pre_feedforward_layernorm = RMSNorm(hidden, eps, offset=1.0, dtype=dtype)
        self.post_feedforward_layernorm = RMSNorm(hidden, eps, offset=1.0, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), cos_sin, kv_cache, meta)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(h)


class Gemma3Model(nn.Module):
    def __init__(self, args: Gemma3Args, dtype: torch.dtype):
        super().__init__()
        self.embed_tokens = Embedding(args.vocab_size, args.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(
            Gemma3DecoderLayer(args, i, dtype) for i in range(args.num_layers)
        )
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps, offset=1.0, dtype=dtype)


_STACKED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class Gemma3ForCausalLM(nn.Module):
    """Gemma 3 text decoder; parameter names follow HF's Gemma3ForCausalLM checkpoints."""

    def __init__(self, hf_config: dict, dtype: torch.dtype, device: torch.device | str = "cpu"):
        super().__init__()
        self.args = args = gemma3_args(hf_config)
        self.dtype = dtype
        self.max_model_len = args.max_position
        with torch.device(device):
            self.model = Gemma3Model(args, dtype)
            self.lm_head = Linear(args.hidden_size, args.vocab_size, bias=False, dtype=dtype)
        if args.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Set by models/gemma3_native.attach when the layers suit the fused native decode step.
        self.native_decode: Callable | None = None
        self.rotary: dict[str, RotaryEmbedding] = {
            layer_type: build_rotary(args.rope[layer_type], args.head_dim, args.max_position)
            for layer_type in set(args.layer_types)
        }
        q, kv = args.num_heads * args.head_dim, args.num_kv_heads * args.head_dim
        inter = args.intermediate_size
        self._shard_ranges = {
            "qkv_proj": ((0, q), (q, kv), (q + kv, kv)),
            "gate_up_proj": ((0, inter), (inter, inter)),
        }

    def kv_cache_specs(self) -> list[KVCacheSpec]:
        shape = (self.args.num_kv_heads, self.args.head_dim)
        return [
            KVCacheSpec((shape, shape), self.args.sliding_window if t == SLIDING else None)
            for t in self.args.layer_types
        ]

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, ...]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """input_ids, positions [num_tokens] -> final-normed hidden [num_tokens, hidden]."""
        h = self.model.embed_tokens(input_ids)  # [num_tokens, hidden]
        # Rounded to the weight dtype first, as the reference does.
        h = h * torch.tensor(self.args.hidden_size**0.5, dtype=h.dtype)
        cos_sin = {t: rope.cos_sin_full(positions, h.dtype) for t, rope in self.rotary.items()}
        if self.native_decode is not None and meta.is_decode_only:
            out = self.native_decode(h, cos_sin, kv_caches, meta)
            if out is not None:
                return self.model.norm(out)
        for i, (layer, kv_cache) in enumerate(zip(self.model.layers, kv_caches, strict=True)):
            h = layer(h, cos_sin, kv_cache, meta.for_layer(i))
        return self.model.norm(h)

    def attach_fused_decode(self) -> str | None:
        """Declared fast paths, after the weights are final (the loader calls this): the whole
        decode step in one native call for bf16 int8 layers (gemma3_native.py), else the lean
        loop for float32 GGUF blocks (gemma3_lean.py). Returns why neither, or None when one
        is attached."""
        from localseek.models import gemma3_lean, gemma3_native

        one_call = gemma3_native.attach(self)
        if one_call is None:
            return None
        lean = gemma3_lean.attach(self)
        return None if lean is None else f"{one_call}; {lean}"

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[num_seqs, hidden] -> [num_seqs, vocab] float32, soft-capped when configured."""
        logits = self.lm_head(hidden).float()
        cap = self.args.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in; unknown or missing names raise ModelLoadError."""
        skip = {"lm_head.weight"} if self.args.tie_word_embeddings else set()
        load_checkpoint(self, self._text_weights(weights), _STACKED, self._shard_ranges, skip=skip)

    def _text_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(weights)


# Multimodal checkpoints keep the text decoder under these prefixes (transformers 4.5x and 5.x).
_TEXT_PREFIXES = (
    ("language_model.model.", "model."),
    ("model.language_model.", "model."),
    ("language_model.lm_head.", "lm_head."),
)
_VISION_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
)


class Gemma3ForConditionalGeneration(Gemma3ForCausalLM):
    """A multimodal Gemma 3 checkpoint served as text only: its vision weights are skipped."""

    def _text_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in weights:
            if name.startswith(_VISION_PREFIXES):
                continue
            for old, new in _TEXT_PREFIXES:
                if name.startswith(old):
                    name = new + name[len(old) :]
                    break
            yield name, tensor
