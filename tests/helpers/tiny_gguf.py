"""Tiny GGUF files written with `gguf.GGUFWriter` from a tiny HF checkpoint, as llama.cpp's
converter would write them (its tensor names, q/k row order, Gemma's stored norm weights)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

# HF module path under model.layers.N -> llama.cpp block tensor name, per architecture.
_BLOCK = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "input_layernorm": "attn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_BLOCK_BY_ARCH = {
    "llama": {**_BLOCK, "post_attention_layernorm": "ffn_norm"},
    "qwen2": {**_BLOCK, "post_attention_layernorm": "ffn_norm"},
    "gemma3": {
        **_BLOCK,
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    },
}
_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
CONTROL, USER_DEFINED, UNUSED = 3, 4, 5


def gguf_name(arch: str, hf: str) -> str:
    module, _, kind = hf.rpartition(".")
    if module.startswith("model.layers."):
        layer, _, rest = module[len("model.layers.") :].partition(".")
        return f"blk.{layer}.{_BLOCK_BY_ARCH[arch][rest]}.{kind}"
    return f"{_GLOBAL[module]}.{kind}"


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp's converter: each head's rows go from [half | half] to interleaved pairs.
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_tiny_gguf(
    model_dir: Path,
    out: Path,
    arch: str,
    *,
    tensor_type: str = "F32",
    chat_template: bool = True,
    extra_metadata: dict | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
    pre_tokenizer: str = "default",
    token_rows: int | None = None,
) -> Path:
    """Convert the HF checkpoint in model_dir to a GGUF at `out`; 2-D weights stored as
    `tensor_type` (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), norms and biases as F32.
    `extra_tensors` are written as given (F32), e.g. llama.cpp's rope_freqs.weight;
    `pre_tokenizer` is the tokenizer.ggml.pre name llama.cpp would write; `token_rows` pads the
    token list to that length instead of the embedding's row count (a broken file)."""
    config = json.loads((model_dir / "config.json").read_text())
    writer = gguf.GGUFWriter(str(out), arch)
    _write_hparams(writer, arch, config)
    _write_tokenizer(
        writer, model_dir, token_rows or config["vocab_size"], chat_template, pre_tokenizer
    )
    for key, value in (extra_metadata or {}).items():
        _add_value(writer, key, value)
    qtype = gguf.GGMLQuantizationType[tensor_type]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    for name, array in load_file(str(model_dir / "model.safetensors")).items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        target = gguf_name(arch, name)
        array = array.astype(np.float32)
        if arch == "llama" and ".attn_q." in target:
            array = _llama_cpp_permute(array, heads)
        if arch == "llama" and ".attn_k." in target:
            array = _llama_cpp_permute(array, kv_heads)
        if arch == "gemma3" and target.endswith("norm.weight"):
            array = array + 1.0
        _add_tensor(writer, target, array, qtype)
    for name, array in (extra_tensors or {}).items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _add_tensor(writer, name: str, array: np.ndarray, qtype) -> None:
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.ndim < 2 or qtype == gguf.GGMLQuantizationType.F32 or array.shape[-1] % block:
        writer.add_tensor(name, np.ascontiguousarray(array))
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, array.astype(np.float16))
    else:
        data = gguf.quants.quantize(array, qtype)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)


def _add_value(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def _write_hparams(writer, arch: str, config: dict) -> None:
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    values = {
        "context_length": config["max_position_embeddings"],
        "embedding_length": hidden,
        "block_count": config["num_hidden_layers"],
        "feed_forward_length": config["intermediate_size"],
        "attention.head_count": heads,
        "attention.head_count_kv": config["num_key_value_heads"],
        "attention.layer_norm_rms_epsilon": float(config["rms_norm_eps"]),
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
    }
    rope = config.get("rope_parameters") or {}
    if arch == "gemma3":
        values["rope.freq_base"] = float(rope["full_attention"]["rope_theta"])
        values["rope.freq_base_swa"] = float(rope["sliding_attention"]["rope_theta"])
        values["attention.sliding_window"] = config["sliding_window"]
        values["attention.sliding_window_pattern"] = [
            t == "sliding_attention" for t in config["layer_types"]
        ]
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if config.get(key) is not None:
                values[key] = float(config[key])
    else:
        values["rope.freq_base"] = float(rope.get("rope_theta", config.get("rope_theta", 1e4)))
        values["rope.dimension_count"] = head_dim
    for key, value in values.items():
        _add_value(writer, f"{arch}.{key}", value)


def _write_tokenizer(
    writer, model_dir: Path, vocab_size: int, chat_template: bool, pre_tokenizer: str
) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    kinds = {}
    for added in tok["added_tokens"]:
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = CONTROL if added["special"] else USER_DEFINED
    tokens, types = [], []
    for i in range(vocab_size):  # llama.cpp pads the vocabulary to the embedding rows
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(kinds.get(i, 1 if i in by_id else UNUSED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ids = {t: i for i, t in enumerate(tokens)}
    writer.add_bos_token_id(ids[tok_config["bos_token"]])
    writer.add_eos_token_id(ids[tok_config["eos_token"]])
    writer.add_add_bos_token(tok["post_processor"]["type"] == "TemplateProcessing")
    if chat_template and tok_config.get("chat_template"):
        writer.add_chat_template(tok_config["chat_template"])
