"""GGUF tensors -> HF-named torch tensors: name mapping, dequantization, layout fixes per arch."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGMLQuantizationType

from localseek.errors import UnsupportedModelError
from localseek.weights.gguf_dequant import dequantize_blocks
from localseek.weights.gguf_file import GGUFFile, GGUFTensorInfo
from localseek.weights.packed_weight import PackedWeight

_T = GGMLQuantizationType
# Storage types localseek dequantizes at load (torch kernels, or the gguf package's numpy ones).
SUPPORTED_TYPES: frozenset[int] = frozenset(
    int(t)
    for t in (
        _T.F32,
        _T.F16,
        _T.BF16,
        _T.Q8_0,
        _T.Q4_0,
        _T.Q4_1,
        _T.Q5_0,
        _T.Q5_1,
        _T.Q2_K,
        _T.Q3_K,
        _T.Q4_K,
        _T.Q5_K,
        _T.Q6_K,
    )
)

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# llama.cpp per-block tensor name -> HF module path under model.layers.N.
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_NAMES_BY_ARCH: Mapping[str, Mapping[str, str]] = {
    "llama": {**_BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"},
    "qwen2": {**_BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"},
    "gemma3": {
        **_BLOCK_NAMES,
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
# Tensors that carry nothing the HF layout holds: llama3 rope factors are rebuilt into the
# config's rope parameters (see gguf_config).
_IGNORED = frozenset({"rope_freqs.weight"})
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def hf_name(arch: str, gguf_name: str) -> str | None:
    """The HF parameter name for a llama.cpp tensor name, or None if the tensor is not mapped."""
    if gguf_name in _IGNORED:
        return None
    match = _BLOCK.match(gguf_name)
    if match:
        layer, part, kind = match.groups()
        module = _BLOCK_NAMES_BY_ARCH[arch].get(part)
        return f"model.layers.{layer}.{module}.{kind}" if module else None
    base, _, kind = gguf_name.rpartition(".")
    module = _GLOBAL_NAMES.get(base)
    return f"{module}.{kind}" if module else None


def check_tensors(gguf: GGUFFile, arch: str) -> None:
    """Fail before any allocation on a storage type or tensor name localseek cannot load."""
    bad_types = sorted({t.type_name for t in gguf.tensors if t.ggml_type not in SUPPORTED_TYPES})
    if bad_types:
        examples = [t.name for t in gguf.tensors if t.type_name in bad_types][:3]
        supported = ", ".join(sorted(_T(t).name for t in SUPPORTED_TYPES))
        raise UnsupportedModelError(
            f"{gguf.path} uses quantization type(s) {', '.join(bad_types)} "
            f"(e.g. tensor {', '.join(examples)}); localseek supports {supported}"
        )
    unknown = [t.name for t in gguf.tensors if t.name not in _IGNORED and not hf_name(arch, t.name)]
    if unknown:
        raise UnsupportedModelError(
            f"{gguf.path} has {len(unknown)} tensor(s) the {arch!r} loader does not know: "
            f"{', '.join(unknown[:6])}{' ...' if len(unknown) > 6 else ''}"
        )


@dataclass(frozen=True)
class LayoutFix:
    """How llama.cpp's converter changed tensors of one architecture, to be undone at load."""

    unpermute_qk: bool  # llama: q/k rows interleaved for llama.cpp's rope (undo to HF halves)
    norm_minus_one: bool  # gemma: norm weights stored as (1 + w); HF keeps w
    num_heads: int
    num_kv_heads: int


def layout_fix(arch: str, config: Mapping) -> LayoutFix:
    return LayoutFix(
        unpermute_qk=arch == "llama",
        norm_minus_one=arch == "gemma3",
        num_heads=int(config["num_attention_heads"]),
        num_kv_heads=int(config["num_key_value_heads"]),
    )


def dequantized(gguf: GGUFFile, info: GGUFTensorInfo) -> torch.Tensor:
    """The tensor as a torch tensor [*info.shape] in float32 (F16/BF16 kept as stored)."""
    raw = gguf.raw(info)  # uint8 [*shape[:-1], bytes per row], a view of the mapping
    if info.ggml_type == _T.F32:
        return torch.from_numpy(raw.view(np.float32))
    if info.ggml_type == _T.F16:
        return torch.from_numpy(raw.view(np.float16))
    if info.ggml_type == _T.BF16:
        return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
    return dequantize_blocks(raw, info.ggml_type)


def _unpermuted_order(rows: int, heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permute: per head, rows (d/2 pairs) -> (2 halves of d/2).

    llama.cpp reorders each head's rows from HF's [first half | second half] rotary layout
    to interleaved pairs; viewing rows as [heads, d/2, 2] and swapping back restores HF's.
    Returned as the source row of each output row, so packed rows move the same way.
    """
    order = torch.arange(rows).reshape(heads, rows // heads // 2, 2)
    return order.transpose(1, 2).reshape(rows)


def apply_layout_fix(
    fix: LayoutFix, gguf_name: str, t: torch.Tensor | PackedWeight
) -> torch.Tensor | PackedWeight:
    if fix.unpermute_qk:
        heads = (
            fix.num_heads
            if ".attn_q." in gguf_name
            else fix.num_kv_heads
            if ".attn_k." in gguf_name
            else None
        )
        if heads is not None:
            order = _unpermuted_order(t.shape[0], heads)
            return t.rows(order) if isinstance(t, PackedWeight) else t.index_select(0, order)
    if fix.norm_minus_one and gguf_name.endswith("norm.weight"):
        return t.float() - 1.0
    return t


def iter_hf_tensors(
    gguf: GGUFFile, arch: str, fix: LayoutFix, keep_packed: frozenset[int] = frozenset()
) -> Iterator[tuple[str, torch.Tensor | PackedWeight]]:
    """(HF name, tensor) one at a time; each is dequantized only when the loader asks for it.

    2-D tensors stored in a `keep_packed` type come as PackedWeight views of the mapping.
    """
    for info in gguf.tensors:
        name = hf_name(arch, info.name)
        if name is None:
            continue
        if info.ggml_type in keep_packed and len(info.shape) == 2:
            data = torch.from_numpy(gguf.raw(info))  # uint8 [rows, bytes per row], no copy
            tensor = PackedWeight(info.ggml_type, data, (info.shape[0], info.shape[1]))
        else:
            tensor = dequantized(gguf, info)
        yield name, apply_layout_fix(fix, info.name, tensor)
