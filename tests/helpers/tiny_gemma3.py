"""A tiny random Gemma 3 text checkpoint saved with transformers, for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import _spread_weights
from tiny_tokenizer import BOS, EOS, save_tiny_tokenizer

# Small, but every Gemma feature on: GQA, a local layer with a short window next to a global
# one with a different rope base, a query scale that is not 1/sqrt(head_dim), logit soft-capping.
_BASE = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    sliding_window=5,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    query_pre_attn_scalar=24,
    final_logit_softcapping=20.0,
    rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    },
    tie_word_embeddings=True,
)


def make_tiny_gemma3(tmp_path: Path, *, seed: int = 0, name: str = "gemma3", **overrides) -> Path:
    """Save a random float32 Gemma3ForCausalLM (+ the tiny tokenizer) and return its directory."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    out = Path(tmp_path) / name
    out.mkdir(parents=True, exist_ok=True)
    save_tiny_tokenizer(out)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    kwargs = {
        **_BASE,
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
        "pad_token_id": 0,
        **overrides,
    }
    config = Gemma3TextConfig(**kwargs)
    config.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _spread_weights(model)
    model.save_pretrained(out)
    return out
