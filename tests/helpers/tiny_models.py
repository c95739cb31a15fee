"""Tiny random HF checkpoints (Llama, Qwen2, Mistral) saved with transformers, for tests."""

from __future__ import annotations

from pathlib import Path

import torch

# Small enough for a CPU test in milliseconds; 4 query heads over 2 kv heads exercises GQA.
_BASE = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
    "rope_theta": 500000.0,
}

ARCHS = ("llama", "llama3", "llama-tied", "qwen2", "mistral")


def tiny_config(arch: str, **overrides):
    """A transformers config for `arch` (one of ARCHS) with `overrides` applied."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    kwargs = dict(_BASE)
    if arch == "llama":
        cls = LlamaConfig
    elif arch == "llama3":
        cls = LlamaConfig
        kwargs["rope_parameters"] = dict(_LLAMA3_ROPE)
    elif arch == "llama-tied":
        cls = LlamaConfig
        kwargs["tie_word_embeddings"] = True
    elif arch == "qwen2":
        cls = Qwen2Config
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0}
    elif arch == "mistral":
        cls = MistralConfig
        kwargs["sliding_window"] = None
        kwargs["head_dim"] = 32  # differs from hidden / heads, as in Mistral-Nemo
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; choose from {ARCHS}")
    kwargs.update(overrides)
    return cls(**kwargs)


def make_tiny_model(
    tmp_path: Path,
    arch: str = "llama",
    *,
    seed: int = 0,
    max_shard_size: str | None = None,
    with_tokenizer: bool = True,
    **overrides,
) -> Path:
    """Save a random float32 `arch` model under tmp_path/<arch> and return the directory.

    `max_shard_size` (e.g. "40KB") makes a sharded checkpoint with an index file. When the
    tiny tokenizer helper is available and `with_tokenizer` is set, its files are written too
    and the vocabulary grows to cover them.
    """
    from transformers import AutoModelForCausalLM

    out = Path(tmp_path) / f"{arch}{'-sharded' if max_shard_size else ''}"
    out.mkdir(parents=True, exist_ok=True)
    if with_tokenizer:
        for key, value in _save_tokenizer(out).items():
            overrides.setdefault(key, value)
    config = tiny_config(arch, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _spread_weights(model)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    return out


def load_reference(path: Path):
    """The transformers model for a saved tiny checkpoint, float32, eval mode, eager attention."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def _spread_weights(model: torch.nn.Module) -> None:
    # HF's init (std 0.02, zero biases) makes tiny models nearly uniform; larger weights and
    # non-zero biases make the logits depend on every path, so a bug cannot hide.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.15 if param.dim() > 1 else 0.1)


def _save_tokenizer(out: Path) -> dict:
    """Write the tiny tokenizer if its helper exists; config values that must agree with it."""
    try:
        from tiny_tokenizer import BOS, EOS, save_tiny_tokenizer
    except ImportError:
        return {}
    save_tiny_tokenizer(out)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    return {
        "vocab_size": max(tok.get_vocab_size(), _BASE["vocab_size"]),
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
    }
