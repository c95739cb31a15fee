"""Llama-family decoders: Llama, Qwen2, Mistral (and DeepSeek-R1-Distill / DeepSeek-LLM weights)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from localseek.errors import ModelLoadError
from localseek.models.attention import AttentionMetadata, KVCacheSpec, paged_attention
from localseek.models.checkpoint import copy_checkpoint
from localseek.models.layers import (
    Embedding,
    GatedMLP,
    Linear,
    PreNormCausalLM,
    PreNormDecoderLayer,
    RMSNorm,
    build_rotary,
    rope_parameters,
    rotate_and_cache,
)
from localseek.models.sliding_windows import layer_windows


@dataclass(frozen=True)
class LlamaArgs:
    """The subset of an HF config a Llama-family decoder needs, validated once."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    hidden_act: str
    rope: dict
    sliding_windows: tuple[int | None, ...]  # per layer; None = full attention


def _require(cfg: Mapping, key: str):
    value = cfg.get(key)
    if value is None:
        raise ModelLoadError(f"model config lacks required field {key!r}")
    return value


def llama_args(cfg: Mapping, *, qkv_bias: bool | None = None) -> LlamaArgs:
    """LlamaArgs from an HF config dict; `qkv_bias` overrides `attention_bias` (Qwen2)."""
    hidden = int(_require(cfg, "hidden_size"))
    heads = int(_require(cfg, "num_attention_heads"))
    num_layers = int(_require(cfg, "num_hidden_layers"))
    if hidden % heads and not cfg.get("head_dim"):
        raise ModelLoadError(f"hidden_size {hidden} is not divisible by {heads} attention heads")
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise ModelLoadError(
            f"num_attention_heads {heads} is not a multiple of {kv_heads} kv heads"
        )
    attention_bias = bool(cfg.get("attention_bias", False))
    return LlamaArgs(
        vocab_size=int(_require(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(_require(cfg, "intermediate_size")),
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position=int(cfg.get("max_position_embeddings") or 2048),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
        o_bias=attention_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        hidden_act=str(cfg.get("hidden_act", "silu")),
        rope=rope_parameters(cfg),
        sliding_windows=layer_windows(cfg, num_layers),
    )


class LlamaAttention(nn.Module):
    """Self-attention with fused qkv, rotary, paged KV and GQA."""

    def __init__(self, args: LlamaArgs, layer_idx: int, dtype: torch.dtype):
        super().__init__()
        self.num_heads, self.num_kv_heads = args.num_heads, args.num_kv_heads
        self.head_dim = args.head_dim
        self.sliding_window = args.sliding_windows[layer_idx]
        self.q_size = args.num_heads * args.head_dim
        self.kv_size = args.num_kv_heads * args.head_dim
        self.qkv_proj = Linear(
            args.hidden_size, self.q_size + 2 * self.kv_size, bias=args.qkv_bias, dtype=dtype
        )
        self.o_proj = Linear(self.q_size, args.hidden_size, bias=args.o_bias, dtype=dtype)
        self.scale = args.head_dim**-0.5

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens = x.shape[0]
        q = rotate_and_cache(
            self.qkv_proj(x),
            self.num_heads,
            self.num_kv_heads,
            cos,
            sin,
            kv_cache,
            meta.slot_mapping,
        )
        k_cache, v_cache = kv_cache
        out = paged_attention(
            q, k_cache, v_cache, meta, scale=self.scale, sliding_window=self.sliding_window
        )  # [num_tokens, num_heads, head_dim]
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class LlamaDecoderLayer(PreNormDecoderLayer):
    def __init__(self, args: LlamaArgs, layer_idx: int, dtype: torch.dtype):
        super().__init__()
        self.self_attn = LlamaAttention(args, layer_idx, dtype)
        self.mlp = GatedMLP(
            args.hidden_size, args.intermediate_size, args.hidden_act, args.mlp_bias, dtype
        )
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype=dtype)


class LlamaModel(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype):
        super().__init__()
        self.embed_tokens = Embedding(args.vocab_size, args.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(args, i, dtype) for i in range(args.num_layers)
        )
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype=dtype)


# HF checkpoint projection -> (fused parameter, shard index) in this implementation.
_STACKED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}
# Checkpoint entries that carry nothing this implementation needs.


class LlamaForCausalLM(PreNormCausalLM):
    """Llama decoder over a paged KV cache; parameter names follow HF's checkpoints."""

    qkv_bias: bool | None = None  # None: the config's attention_bias decides

    def __init__(self, hf_config: dict, dtype: torch.dtype, device: torch.device | str = "cpu"):
        super().__init__()
        self.args = llama_args(hf_config, qkv_bias=self.qkv_bias)
        self.dtype = dtype
        self.max_model_len = self.args.max_position
        args = self.args
        with torch.device(device):
            self.model = LlamaModel(args, dtype)
            self.rotary = build_rotary(args.rope, args.head_dim, args.max_position)
        tied = args.tie_word_embeddings
        # A tied head gets no storage of its own (vocab x hidden can be hundreds of MB).
        self.lm_head = Linear(
            args.hidden_size,
            args.vocab_size,
            bias=False,
            dtype=dtype,
            device="meta" if tied else device,
        )
        if tied:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Row ranges of each shard inside the fused parameters.
        q, kv = args.num_heads * args.head_dim, args.num_kv_heads * args.head_dim
        inter = args.intermediate_size
        self._shard_ranges = {
            "qkv_proj": ((0, q), (q, kv), (q + kv, kv)),
            "gate_up_proj": ((0, inter), (inter, inter)),
        }

    def attach_fused_decode(self) -> str | None:
        """Declared fast path: decode steps in one lean loop over the native kernels
        (llama_lean.py) where the weights are GGUF blocks on CPU. Returns why not, or None
        when attached; the loader calls it after the weights are final."""
        from localseek.models.llama_lean import attach

        return attach(self)

    def kv_cache_specs(self) -> list[KVCacheSpec]:
        shape = (self.args.num_kv_heads, self.args.head_dim)
        return [KVCacheSpec((shape, shape), window) for window in self.args.sliding_windows]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in; unknown or missing names raise ModelLoadError."""
        skip = {"lm_head.weight"} if self.args.tie_word_embeddings else set()
        load_checkpoint(self, weights, _STACKED, self._shard_ranges, skip=skip)


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2: Llama with biases on q/k/v (none on o_proj)."""

    qkv_bias = True


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral: Llama with an optional sliding window on every layer."""


def load_checkpoint(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    stacked: Mapping[str, tuple[str, int]],
    shard_ranges: Mapping[str, tuple[tuple[int, int], ...]],
    *,
    skip: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Copy (name, tensor) pairs into `model`'s parameters, fusing stacked shards.

    `stacked` maps a checkpoint module name (e.g. "q_proj") to (fused module name, shard index);
    `shard_ranges[fused][index]` is that shard's (start row, rows). Names in `skip` are ignored.
    Raises ModelLoadError naming unexpected tensors, wrong shapes or missing parameters.
    """

    def view(data: torch.Tensor, target: str, shard: int | None) -> torch.Tensor:
        if shard is None:
            return data
        start, rows = shard_ranges[target.split(".")[-2]][shard]
        return data.narrow(0, start, rows)

    def num_parts(target: str, _param: torch.Tensor) -> int:
        parts = target.split(".")
        fused = parts[-2] if len(parts) >= 2 else None
        return len(shard_ranges[fused]) if fused in shard_ranges else 1

    copy_checkpoint(
        model, weights, lambda name: _map_name(name, stacked), view, num_parts, skip=skip
    )


def _map_name(name: str, stacked: Mapping[str, tuple[str, int]]) -> tuple[str, int | None]:
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in stacked:
        fused, shard = stacked[parts[-2]]
        return ".".join([*parts[:-2], fused, parts[-1]]), shard
    return name, None
