"""An HF-style config.json dict rebuilt from a GGUF file's `{arch}.*` metadata."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from localseek.errors import ModelLoadError, UnsupportedModelError
from localseek.weights.gguf_file import GGUFFile

# GGUF general.architecture -> HF architectures[0] the model registry resolves.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma3": "gemma3_text"}
# llama.cpp's defaults where the file says nothing.
_DEFAULT_ROPE_THETA = 10000.0
_GEMMA3_LOCAL_ROPE_THETA = 10000.0
_GEMMA3_SLIDING_PATTERN = 6  # every 6th layer attends globally
_GEMMA3_27B_LAYERS = 62  # the one size that scales queries by hidden/heads, not head_dim
_MISSING = object()


def architecture(gguf: GGUFFile) -> str:
    """general.architecture, checked against the architectures localseek can run."""
    arch = gguf.metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelLoadError(f"GGUF file {gguf.path} has no general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"GGUF architecture {arch!r} in {gguf.path} is not supported; "
            f"supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return arch


def build_config(gguf: GGUFFile) -> dict:
    """The HF config the model class for this file's architecture reads."""
    arch = architecture(gguf)
    get = _getter(gguf, arch)
    hidden = int(get("embedding_length"))
    heads = _uniform(get("attention.head_count"), "attention.head_count", gguf)
    head_dim = int(get("attention.key_length", hidden // heads))
    value_dim = int(get("attention.value_length", head_dim))
    if value_dim != head_dim:
        raise UnsupportedModelError(
            f"{gguf.path}: key length {head_dim} differs from value length {value_dim}"
        )
    tensor_names = {t.name for t in gguf.tensors}
    if "token_embd.weight" not in tensor_names:
        raise ModelLoadError(f"GGUF file {gguf.path} has no token_embd.weight tensor")
    embd = next(t for t in gguf.tensors if t.name == "token_embd.weight")
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[arch]],
        "model_type": _MODEL_TYPES[arch],
        "hidden_size": hidden,
        "intermediate_size": _uniform(get("feed_forward_length"), "feed_forward_length", gguf),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": _uniform(
            get("attention.head_count_kv", heads), "attention.head_count_kv", gguf
        ),
        "head_dim": head_dim,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": int(embd.shape[0]),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    for key, name in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")):
        value = gguf.metadata.get(f"tokenizer.ggml.{name}")
        if value is not None:
            config[key] = int(value)
    _ARCH_EXTRAS[arch](gguf, get, config)
    return config


def _getter(gguf: GGUFFile, arch: str) -> Callable[..., Any]:
    def get(key: str, default: Any = _MISSING) -> Any:
        value = gguf.metadata.get(f"{arch}.{key}", default)
        if value is _MISSING:
            raise ModelLoadError(f"GGUF file {gguf.path} lacks metadata {arch}.{key}")
        return value

    return get


def _uniform(value: Any, key: str, gguf: GGUFFile) -> int:
    # Some converters write per-layer arrays; localseek's models need one value for all layers.
    if isinstance(value, np.ndarray):
        values = set(value.tolist())
        if len(values) != 1:
            raise UnsupportedModelError(
                f"{gguf.path}: {key} varies per layer ({sorted(values)}); not supported"
            )
        return int(values.pop())
    return int(value)


def _rope_scaling(get: Callable[..., Any], gguf: GGUFFile) -> dict | None:
    kind = get("rope.scaling.type", "none")
    if kind in ("none", None):
        return None
    factor = float(get("rope.scaling.factor", 1.0))
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        return {
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": int(get("rope.scaling.original_context_length")),
        }
    raise UnsupportedModelError(f"{gguf.path}: rope scaling type {kind!r} is not supported")


def _llama_extras(gguf: GGUFFile, get: Callable[..., Any], config: dict) -> None:
    # HF Llama's attention_bias puts biases on q, k, v and o alike.
    config["attention_bias"] = any(t.name == "blk.0.attn_q.bias" for t in gguf.tensors)
    _rope(gguf, get, config)


def _rope(gguf: GGUFFile, get: Callable[..., Any], config: dict) -> None:
    config["rope_theta"] = float(get("rope.freq_base", _DEFAULT_ROPE_THETA))
    scaling = _rope_scaling(get, gguf) or _llama3_scaling(gguf, config)
    if scaling:
        config["rope_scaling"] = scaling


def _qwen2_extras(gguf: GGUFFile, get: Callable[..., Any], config: dict) -> None:
    # Qwen2 always has q/k/v biases and never an o bias (the model class knows).
    _rope(gguf, get, config)
    config["use_sliding_window"] = False


def _llama3_scaling(gguf: GGUFFile, config: dict) -> dict | None:
    """Llama 3.1+ files carry the scaled rope as per-frequency divisors (rope_freqs.weight).

    Every Llama 3.x release uses low/high frequency factors 1 and 4 over an 8192-token original
    context; the divisors are checked against that formula rather than assumed.
    """
    info = next((t for t in gguf.tensors if t.name == "rope_freqs.weight"), None)
    if info is None:
        return None
    from localseek.weights.gguf_tensors import dequantized

    divisors = dequantized(gguf, info).float().numpy().astype(np.float64)
    dim = config["head_dim"]
    params = {
        "rope_type": "llama3",
        "factor": float(divisors.max()),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    inv_freq = 1.0 / config["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    wavelen = 2 * math.pi / inv_freq
    smooth = np.clip((8192 / wavelen - 1.0) / (4.0 - 1.0), 0.0, 1.0)
    expected = 1.0 / ((1 - smooth) / params["factor"] + smooth)
    if divisors.shape != expected.shape or not np.allclose(divisors, expected, rtol=1e-3):
        raise UnsupportedModelError(
            f"{gguf.path}: rope_freqs.weight does not match Llama 3 rope scaling; "
            "this rope variant is not supported"
        )
    return params


def _gemma3_extras(gguf: GGUFFile, get: Callable[..., Any], config: dict) -> None:
    layers = config["num_hidden_layers"]
    pattern = get("attention.sliding_window_pattern", None)
    if isinstance(pattern, np.ndarray) and pattern.size == layers:
        sliding = [bool(s) for s in pattern.tolist()]  # per layer: True = local (sliding)
    else:
        period = int(pattern) if isinstance(pattern, int) and pattern > 0 else None
        period = period or _GEMMA3_SLIDING_PATTERN
        sliding = [(i + 1) % period != 0 for i in range(layers)]
    full = {"rope_type": "default", "rope_theta": float(get("rope.freq_base", 1_000_000.0))}
    full.update(_rope_scaling(get, gguf) or {})
    head_dim = config["head_dim"]
    config.update(
        {
            "hidden_activation": "gelu_pytorch_tanh",
            "sliding_window": int(get("attention.sliding_window")),
            "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
            "rope_parameters": {
                "full_attention": full,
                "sliding_attention": {
                    "rope_type": "default",
                    "rope_theta": float(get("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_THETA)),
                },
            },
            # As llama.cpp: queries scale by 1/sqrt(head_dim), except Gemma 3 27B.
            "query_pre_attn_scalar": (
                config["hidden_size"] // config["num_attention_heads"]
                if layers == _GEMMA3_27B_LAYERS
                else head_dim
            ),
            "attn_logit_softcapping": get("attn_logit_softcapping", None),
            "final_logit_softcapping": get("final_logit_softcapping", None),
        }
    )


_ARCH_EXTRAS: dict[str, Callable[[GGUFFile, Callable[..., Any], dict], None]] = {
    "llama": _llama_extras,
    "qwen2": _qwen2_extras,
    "gemma3": _gemma3_extras,
}
