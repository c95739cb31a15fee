"""Every tensor of a model, rebuilt from its config.json: the parameter inventory sizing counts.

Shapes follow the HF checkpoints (Linear weights are [out, in]). Counted from the config, not
from a rule of thumb, so MoE experts, MLA's low-rank projections, untied heads and Qwen2's
biases all land where they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from localseek.errors import ModelLoadError

DENSE_ARCHITECTURES = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "MistralForCausalLM",
    "Gemma3ForCausalLM",
)
MLA_ARCHITECTURES = ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM")


@dataclass(frozen=True)
class TensorGroup:
    """`count` tensors of one shape."""

    shape: tuple[int, ...]
    count: int
    quantized: bool  # a decoder layer's Linear weight: what a weight quantization compresses
    active: int | None = None  # how many of `count` one token uses (MoE experts); None: all
    checkpoint_only: bool = False  # multi-token-prediction layers: on disk, never loaded

    @property
    def numel(self) -> int:
        return self.count * math.prod(self.shape)

    @property
    def active_numel(self) -> int:
        return (self.count if self.active is None else self.active) * math.prod(self.shape)


def _int(cfg: Mapping, key: str) -> int:
    value = cfg.get(key)
    if value is None:
        raise ModelLoadError(f"model config lacks required field {key!r}")
    return int(value)


def inventory(cfg: Mapping, architecture: str) -> list[TensorGroup]:
    """All tensors of the model `cfg` describes (architecture from DENSE_ or MLA_ARCHITECTURES)."""
    vocab, hidden = _int(cfg, "vocab_size"), _int(cfg, "hidden_size")
    groups = [TensorGroup((vocab, hidden), 1, False), TensorGroup((hidden,), 1, False)]
    gemma3 = architecture == "Gemma3ForCausalLM"  # ties its embeddings unless told otherwise
    if not cfg.get("tie_word_embeddings", gemma3):
        groups.append(TensorGroup((vocab, hidden), 1, False))  # lm_head
    layers = _int(cfg, "num_hidden_layers")
    if architecture in MLA_ARCHITECTURES:
        return groups + _deepseek_layers(cfg, layers)
    return groups + _scaled(_dense_layer(cfg), layers)


def _scaled(groups: list[TensorGroup], n: int, checkpoint_only: bool = False) -> list[TensorGroup]:
    """`groups` repeated over n layers."""
    return [
        TensorGroup(
            g.shape,
            g.count * n,
            g.quantized,
            None if g.active is None else g.active * n,
            checkpoint_only or g.checkpoint_only,
        )
        for g in groups
        if n > 0
    ]


def _mlp(hidden: int, inter: int, count: int = 1, active: int | None = None) -> list[TensorGroup]:
    # gate_proj and up_proj [inter, hidden], down_proj [hidden, inter]
    return [
        TensorGroup((inter, hidden), 2 * count, True, None if active is None else 2 * active),
        TensorGroup((hidden, inter), count, True, active),
    ]


def _dense_layer(cfg: Mapping) -> list[TensorGroup]:
    hidden, heads = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    qwen2 = (cfg.get("architectures") or [""])[0] == "Qwen2ForCausalLM"
    attention_bias = bool(cfg.get("attention_bias", False))
    groups = [
        TensorGroup((q, hidden), 1, True),
        TensorGroup((kv, hidden), 2, True),
        TensorGroup((hidden, q), 1, True),
        TensorGroup((hidden,), 2, False),  # input / post-attention norms
        *_mlp(hidden, _int(cfg, "intermediate_size")),
    ]
    if qwen2 or attention_bias:
        groups += [TensorGroup((q,), 1, False), TensorGroup((kv,), 2, False)]
    if attention_bias and not qwen2:
        groups.append(TensorGroup((hidden,), 1, False))  # o_proj bias
    if (cfg.get("architectures") or [""])[0] == "Gemma3ForCausalLM":
        groups += [
            TensorGroup((head_dim,), 2, False),  # q_norm / k_norm
            TensorGroup((hidden,), 2, False),  # pre- / post-feedforward norms
        ]
    return groups


def _mla_attention(cfg: Mapping) -> list[TensorGroup]:
    hidden, heads = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
    nope, rope, v = (_int(cfg, k) for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
    kv_rank, q_rank = _int(cfg, "kv_lora_rank"), cfg.get("q_lora_rank")
    if q_rank:
        q = [
            TensorGroup((int(q_rank), hidden), 1, True),  # q_a_proj
            TensorGroup((int(q_rank),), 1, False),  # q_a_layernorm
            TensorGroup((heads * (nope + rope), int(q_rank)), 1, True),  # q_b_proj
        ]
    else:
        q = [TensorGroup((heads * (nope + rope), hidden), 1, True)]  # q_proj
    return q + [
        TensorGroup((kv_rank + rope, hidden), 1, True),  # kv_a_proj_with_mqa
        TensorGroup((kv_rank,), 1, False),  # kv_a_layernorm
        TensorGroup((heads * (nope + v), kv_rank), 1, True),  # kv_b_proj
        TensorGroup((hidden, heads * v), 1, True),  # o_proj
        TensorGroup((hidden,), 2, False),  # input / post-attention norms
    ]


def _moe(cfg: Mapping) -> list[TensorGroup]:
    hidden, inter = _int(cfg, "hidden_size"), _int(cfg, "moe_intermediate_size")
    experts, top_k = _int(cfg, "n_routed_experts"), _int(cfg, "num_experts_per_tok")
    shared = int(cfg.get("n_shared_experts") or 0)
    groups = [
        *_mlp(hidden, inter, experts, top_k),
        TensorGroup((experts, hidden), 1, False),  # router (kept 16-bit)
    ]
    if shared:
        groups += _mlp(hidden, inter * shared)
    v3 = (cfg.get("architectures") or [""])[0] == "DeepseekV3ForCausalLM"
    if (cfg.get("topk_method") or ("noaux_tc" if v3 else "greedy")) == "noaux_tc":
        groups.append(TensorGroup((experts,), 1, False))  # e_score_correction_bias
    return groups


def _deepseek_layers(cfg: Mapping, layers: int) -> list[TensorGroup]:
    hidden = _int(cfg, "hidden_size")
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    freq = int(cfg.get("moe_layer_freq") or 1)

    def is_moe(i: int) -> bool:
        return bool(cfg.get("n_routed_experts")) and i >= first_dense and i % freq == 0

    num_moe = sum(is_moe(i) for i in range(layers))
    dense = _mla_attention(cfg) + _mlp(hidden, _int(cfg, "intermediate_size"))
    moe = _mla_attention(cfg) + (_moe(cfg) if num_moe else [])
    groups = _scaled(dense, layers - num_moe) + _scaled(moe, num_moe)
    # Multi-token-prediction layers follow the main ones in the checkpoint: a decoder layer plus
    # eh_proj [hidden, 2 * hidden], enorm / hnorm / shared_head.norm and their own embed / head.
    mtp = int(cfg.get("num_nextn_predict_layers") or 0)
    vocab = _int(cfg, "vocab_size")
    extra = [
        TensorGroup((hidden, 2 * hidden), 1, True),
        TensorGroup((hidden,), 3, False),
        TensorGroup((vocab, hidden), 2, False),
    ]
    for i in range(layers, layers + mtp):
        groups += _scaled((moe if is_moe(i) else dense) + extra, 1, checkpoint_only=True)
    return groups
