"""DeepSeek-V2 / V2-Lite / V3 / R1 decoders: MLA with a latent KV cache, and Mixture-of-Experts.

The model file wires layers together (mla.py, moe.py) with HF's parameter names; weight-name
mapping, FP8 dequantization and MTP skipping live in deepseek_weights.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from localseek.errors import ModelLoadError, UnsupportedModelError
from localseek.models.attention import KVCacheSpec
from localseek.models.deepseek_weights import (
    dequantize_stream,
    load_deepseek_weights,
    skip_mtp_layers,
)
from localseek.models.layers import (
    Embedding,
    GatedMLP,
    Linear,
    PreNormCausalLM,
    PreNormDecoderLayer,
    RMSNorm,
    build_rotary,
    rope_parameters,
)
from localseek.models.mla import MLAArgs, MLAttention
from localseek.models.moe import SCORING_FUNCS, TOPK_METHODS, DeepseekMoE, MoEArgs
from localseek.models.rope_yarn import yarn_freqs, yarn_softmax_scale


@dataclass(frozen=True)
class DeepseekArgs:
    """The subset of an HF DeepSeek-V2/V3 config the decoder needs, validated once."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int  # dense MLP layers
    num_layers: int
    rms_norm_eps: float
    max_position: int
    tie_word_embeddings: bool
    rope: dict
    mla: MLAArgs
    moe: MoEArgs | None  # None: every layer dense
    moe_layers: tuple[bool, ...]  # per layer: MoE (True) or dense MLP
    num_mtp_layers: int  # checkpoint layers past num_layers, skipped at load
    fp8_block: tuple[int, int] | None  # block shape of an fp8 checkpoint's scales


def _require(cfg: Mapping, key: str):
    value = cfg.get(key)
    if value is None:
        raise ModelLoadError(f"DeepSeek model config lacks required field {key!r}")
    return value


def deepseek_args(cfg: Mapping, version: int) -> DeepseekArgs:
    """DeepseekArgs from an HF config dict; `version` 2 or 3 picks the routing defaults."""
    num_layers = int(_require(cfg, "num_hidden_layers"))
    hidden_act = str(cfg.get("hidden_act", "silu"))
    if hidden_act != "silu":
        raise UnsupportedModelError(f"DeepSeek hidden_act {hidden_act!r} is not supported (silu)")
    rope = rope_parameters(cfg)
    moe = _moe_args(cfg, version) if cfg.get("n_routed_experts") else None
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    freq = int(cfg.get("moe_layer_freq") or 1)
    moe_layers = tuple(
        moe is not None and i >= first_dense and i % freq == 0 for i in range(num_layers)
    )
    return DeepseekArgs(
        vocab_size=int(_require(cfg, "vocab_size")),
        hidden_size=int(_require(cfg, "hidden_size")),
        intermediate_size=int(_require(cfg, "intermediate_size")),
        num_layers=num_layers,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position=int(cfg.get("max_position_embeddings") or 4096),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope=rope,
        mla=_mla_args(cfg, rope, version),
        moe=moe,
        moe_layers=moe_layers,
        num_mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
        fp8_block=_fp8_block(cfg),
    )


def _mla_args(cfg: Mapping, rope: Mapping, version: int) -> MLAArgs:
    nope, rope_dim = int(_require(cfg, "qk_nope_head_dim")), int(_require(cfg, "qk_rope_head_dim"))
    q_lora = cfg.get("q_lora_rank")
    return MLAArgs(
        hidden_size=int(_require(cfg, "hidden_size")),
        num_heads=int(_require(cfg, "num_attention_heads")),
        q_lora_rank=int(q_lora) if q_lora else None,
        kv_lora_rank=int(_require(cfg, "kv_lora_rank")),
        qk_nope_head_dim=nope,
        qk_rope_head_dim=rope_dim,
        v_head_dim=int(_require(cfg, "v_head_dim")),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        attention_bias=bool(cfg.get("attention_bias", False)),
        softmax_scale=(nope + rope_dim) ** -0.5 * yarn_softmax_scale(rope),
        # DeepSeek's checkpoints rotate adjacent pairs; transformers' V3 has a switch for it.
        rope_neox_style=version == 3 and cfg.get("rope_interleave") is False,
    )


def _moe_args(cfg: Mapping, version: int) -> MoEArgs:
    experts = int(cfg["n_routed_experts"])
    scoring = str(cfg.get("scoring_func") or ("softmax" if version == 2 else "sigmoid"))
    method = str(cfg.get("topk_method") or ("greedy" if version == 2 else "noaux_tc"))
    if scoring not in SCORING_FUNCS:
        raise UnsupportedModelError(
            f"scoring_func {scoring!r} is not supported; use {SCORING_FUNCS}"
        )
    if method not in TOPK_METHODS:
        raise UnsupportedModelError(f"topk_method {method!r} is not supported; use {TOPK_METHODS}")
    n_group = int(cfg.get("n_group") or 1)
    topk_group = int(cfg.get("topk_group") or n_group)
    if experts % n_group or not 1 <= topk_group <= n_group:
        raise ModelLoadError(
            f"n_routed_experts {experts} must split into n_group {n_group} equal groups, "
            f"of which topk_group {topk_group} (1..n_group) are kept"
        )
    top_k = int(_require(cfg, "num_experts_per_tok"))
    if top_k > experts:
        raise ModelLoadError(f"num_experts_per_tok {top_k} exceeds n_routed_experts {experts}")
    return MoEArgs(
        hidden_size=int(cfg["hidden_size"]),
        moe_intermediate_size=int(_require(cfg, "moe_intermediate_size")),
        n_routed_experts=experts,
        num_experts_per_tok=top_k,
        n_shared_experts=int(cfg.get("n_shared_experts") or 0),
        scoring_func=scoring,
        topk_method=method,
        n_group=n_group,
        topk_group=topk_group,
        norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
        routed_scaling_factor=float(cfg.get("routed_scaling_factor") or 1.0),
        scale_after_norm=version == 3,
        hidden_act="silu",
    )


def _fp8_block(cfg: Mapping) -> tuple[int, int] | None:
    quant = cfg.get("quantization_config") or {}
    if quant.get("quant_method") != "fp8":
        return None
    block = quant.get("weight_block_size") or [128, 128]
    return int(block[0]), int(block[1])


class DeepseekDecoderLayer(PreNormDecoderLayer):
    def __init__(self, args: DeepseekArgs, layer_idx: int, dtype: torch.dtype):
        super().__init__()
        self.self_attn = MLAttention(args.mla, dtype)
        if args.moe_layers[layer_idx]:
            self.mlp = DeepseekMoE(args.moe, dtype)
        else:
            self.mlp = GatedMLP(args.hidden_size, args.intermediate_size, "silu", dtype=dtype)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype=dtype)


class DeepseekModel(nn.Module):
    def __init__(self, args: DeepseekArgs, dtype: torch.dtype):
        super().__init__()
        self.embed_tokens = Embedding(args.vocab_size, args.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(
            DeepseekDecoderLayer(args, i, dtype) for i in range(args.num_layers)
        )
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype=dtype)


class DeepseekV2ForCausalLM(PreNormCausalLM):
    """DeepSeek decoder over a paged latent KV cache; parameter names follow HF's checkpoints."""

    version = 2

    def __init__(self, hf_config: dict, dtype: torch.dtype, device: torch.device | str = "cpu"):
        super().__init__()
        self.args = deepseek_args(hf_config, self.version)
        self.dtype = dtype
        self.max_model_len = self.args.max_position
        args = self.args
        with torch.device(device):
            self.model = DeepseekModel(args, dtype)
            self.lm_head = Linear(args.hidden_size, args.vocab_size, bias=False, dtype=dtype)
            self.rotary = build_rotary(
                args.rope,
                args.mla.qk_rope_head_dim,
                args.max_position,
                is_neox_style=args.mla.rope_neox_style,
                extra_types={"yarn": yarn_freqs},
            )
        if args.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def kv_cache_specs(self) -> list[KVCacheSpec]:
        """One latent-plus-rotary-key tensor per layer: kv_lora_rank + qk_rope_head_dim values."""
        return [KVCacheSpec(((self.args.mla.cache_dim,),)) for _ in range(self.args.num_layers)]

    def uncompressed_kv_values_per_token(self) -> int:
        """Values per token an ordinary (full K/V) cache would need, for the startup comparison."""
        m = self.args.mla
        per_head = m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim
        return self.args.num_layers * m.num_heads * per_head

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in (fp8 dequantized, MTP layers skipped); errors name the tensor."""
        args = self.args
        weights = skip_mtp_layers(weights, args.num_layers, args.num_mtp_layers)
        # A no-op for tensors that are not fp8; published fp8 checkpoints use 128x128 blocks.
        weights = dequantize_stream(weights, args.fp8_block or (128, 128), self.dtype)
        skip = frozenset({"lm_head.weight"}) if args.tie_word_embeddings else frozenset()
        load_deepseek_weights(self, weights, skip=skip)


class DeepseekV3ForCausalLM(DeepseekV2ForCausalLM):
    """DeepSeek-V3 / R1: sigmoid routing with a selection bias and group-limited top-k."""

    version = 3
