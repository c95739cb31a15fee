"""Tiny random DeepSeek-V2/V3 checkpoints (MLA + MoE) saved with transformers, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch

BASE = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    moe_intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    first_k_dense_replace=1,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=4,
    v_head_dim=12,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
YARN = dict(
    rope_type="yarn",
    rope_theta=10000.0,
    factor=4.0,
    original_max_position_embeddings=16,
    beta_fast=32,
    beta_slow=1,
)

# name -> (version, config overrides). Each covers a published variant's distinctive path.
TINY = {
    # V2-Lite's shape: no q compression, softmax greedy routing, YaRN with mscale 0.707.
    "v2-lite": (
        2,
        dict(
            q_lora_rank=None,
            topk_method="greedy",
            rope_parameters=dict(YARN, mscale=0.707, mscale_all_dim=0.707),
        ),
    ),
    # V2's group-limited greedy routing with routed scaling, q compressed. top_k 3 > topk_group 2,
    # else the best groups always hold the greedy choice and grouping could not be told apart.
    "v2-group": (
        2,
        dict(
            q_lora_rank=24,
            topk_method="group_limited_greedy",
            n_group=4,
            topk_group=2,
            num_experts_per_tok=3,
            routed_scaling_factor=16.0,
        ),
    ),
    # V3: sigmoid + correction bias, group-limited top-k, normalised then scaled, YaRN.
    "v3": (
        3,
        dict(
            q_lora_rank=24,
            n_group=4,
            topk_group=2,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            num_nextn_predict_layers=0,
            rope_parameters=dict(YARN, mscale=1.0, mscale_all_dim=1.0),
        ),
    ),
    # V3 without q compression, on the plain rotary.
    "v3-nolora": (
        3,
        dict(
            q_lora_rank=None,
            n_group=2,
            topk_group=1,
            norm_topk_prob=True,
            num_nextn_predict_layers=0,
        ),
    ),
}


def make_tiny_deepseek(
    tmp_path: Path, name: str, seed: int = 0, with_tokenizer: bool = False, **overrides
) -> Path:
    """Save a random float32 tiny DeepSeek checkpoint (a TINY entry) and return its directory.

    `with_tokenizer` also writes the tiny tokenizer (tests/helpers/tiny_tokenizer.py) and grows
    the vocabulary to 512 to cover it, so `LLM(path)` can open the directory.
    """
    from transformers import AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config

    version, extra = TINY[name]
    out = Path(tmp_path) / name
    kwargs = {**BASE, **extra}
    if with_tokenizer:
        from tiny_tokenizer import BOS, EOS, save_tiny_tokenizer
        from tokenizers import Tokenizer

        save_tiny_tokenizer(out)
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        kwargs.update(
            vocab_size=512, bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS)
        )
    kwargs.update(overrides)
    config = (DeepseekV2Config if version == 2 else DeepseekV3Config)(**kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        # HF's init makes tiny models nearly uniform; larger weights make every path matter.
        for pname, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "norm" in pname:
                tensor.uniform_(0.5, 1.5)
            elif "e_score_correction_bias" in pname:
                tensor.normal_(0.0, 0.3)  # must change which experts win
            elif tensor.is_floating_point() and "inv_freq" not in pname:
                tensor.normal_(0.0, 0.15 if tensor.dim() > 1 else 0.1)
    model.save_pretrained(out)
    return out
