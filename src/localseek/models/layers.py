"""Building blocks shared by the model files: Linear, Embedding, RMSNorm, rotary, gated MLP."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from localseek.errors import UnsupportedModelError
from localseek.kernels.pointwise import pointwise_kernel
from localseek.models.attention import AttentionMetadata, write_kv


class Linear(nn.Linear):
    """nn.Linear without random init: every weight comes from a checkpoint.

    Skipping init saves seconds per billion parameters at load; a weight that the checkpoint
    lacks is reported by the model's load_weights, so uninitialised memory is never used.
    Quantization swaps these for its own modules from outside the model.
    """

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    """nn.Embedding without random init (see Linear)."""

    def reset_parameters(self) -> None:
        pass


class RMSNorm(nn.Module):
    """RMS normalisation computed in float32, optionally fused with the residual add.

    `forward(x)` returns the normalised x; `forward(x, residual)` first adds x to the residual
    and returns (normalised sum, new residual), which saves one pass over the activations.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        offset: float = 0.0,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.eps = eps
        self.offset = offset  # Gemma stores (weight - 1) and passes offset=1.0
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))
        self._scale: torch.Tensor | None = None
        self._scale_key: tuple | None = None

    def scale(self) -> torch.Tensor:
        """float32 (weight + offset) [hidden], kept until the weight is written again.

        Recomputing it every call cost two small ops per norm, ~8 norms per layer.
        """
        w = self.weight
        key = (w.data_ptr(), w.device, 0 if w.is_inference() else w._version)
        if self._scale is None or key != self._scale_key:
            self._scale, self._scale_key = w.float() + self.offset, key
        return self._scale

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is one fused kernel, bitwise equal to x * rsqrt(mean(x^2) + eps) (checked
        # at float32 and bfloat16 against that formula; the Gemma GGUF parity stays bitwise).
        if self.offset == 0.0:
            # Llama rounds to the activation dtype before the weight multiply.
            normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
            return self.weight * normed.to(x.dtype)
        return F.rms_norm(x.float(), (x.shape[-1],), self.scale(), self.eps).to(x.dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        native = pointwise_kernel()  # float32 CPU rows (handles); else torch's ops
        if native is not None and native.handles(x, residual):
            done = native.add_rms_norm(x, residual, self.scale(), self.eps)
            if done is not None:
                return done[0] if residual is None else done
        if residual is None:
            return self._norm(x)
        residual = x + residual
        return self._norm(residual), residual


def rms_norm_rows(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS-normalise x [..., rows, dim] in float32 and multiply by scale [rows, dim] float32.

    Lets differently weighted heads (Gemma's q and k norms) share one call.
    """
    native = pointwise_kernel()
    if native is not None and native.handles(scale) and x.dtype == scale.dtype == torch.float32:
        done = native.add_rms_norm(x.contiguous(), None, scale, eps)
        if done is not None:
            return done[0]
    normed = F.rms_norm(x.float(), (x.shape[-1],), None, eps)
    return (normed * scale).to(x.dtype)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up fused into one matmul.

    Checkpoint names gate_proj/up_proj load into the two halves of gate_up_proj (the model's
    load_weights maps them).
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        act: str = "silu",
        bias: bool = False,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if act not in _ACTIVATIONS:
            raise UnsupportedModelError(
                f"unsupported hidden_act {act!r}; supported: {sorted(_ACTIVATIONS)}"
            )
        self.act, self.act_name = _ACTIVATIONS[act], act
        self.intermediate_size = intermediate_size
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias=bias, dtype=dtype)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        native = pointwise_kernel()  # float32 CPU rows (handles); else torch's ops
        if native is not None and native.handles(gate_up):
            h = native.gated_act(gate_up, self.act_name)
            if h is not None:
                return self.down_proj(h)
        gate, up = gate_up.split(self.intermediate_size, dim=-1)
        # In place into act's fresh output: out-of-place bf16 `*` on the two strided halves
        # measured 2x slower on CPU (11 vs 5 ms for 2048 tokens x 1536).
        return self.down_proj(self.act(gate).mul_(up))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_tanh": _gelu_tanh,
    "gelu": F.gelu,
}


# ---- rotary position embedding ----------------------------------------------------------------

# A rope type computes (inv_freq [rotary_dim // 2] float32, attention_scale) from the merged rope
# parameters, the rotary dimension and the model's max_position_embeddings.
RopeFrequencyFn = Callable[[Mapping, int, int], tuple[torch.Tensor, float]]


def _base_inv_freq(params: Mapping, dim: int) -> torch.Tensor:
    theta = float(params.get("rope_theta", 10000.0))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (theta**exponents)


def _default_freqs(params: Mapping, dim: int, max_position: int) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(params, dim), 1.0


def _linear_freqs(params: Mapping, dim: int, max_position: int) -> tuple[torch.Tensor, float]:
    # Position interpolation: positions are divided by the factor.
    return _base_inv_freq(params, dim) / float(params["factor"]), 1.0


def _llama3_freqs(params: Mapping, dim: int, max_position: int) -> tuple[torch.Tensor, float]:
    """Llama 3.1 scaling: long wavelengths slowed by `factor`, short kept, a smooth band between."""
    inv_freq = _base_inv_freq(params, dim)
    factor = float(params["factor"])
    low = float(params["low_freq_factor"])
    high = float(params["high_freq_factor"])
    original = float(params["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    # 0 where the wavelength is longer than original/low (fully scaled), 1 where shorter than
    # original/high (untouched), linear in original/wavelen between.
    smooth = ((original / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    return scaled, 1.0


BUILTIN_ROPE_TYPES: Mapping[str, RopeFrequencyFn] = {
    "default": _default_freqs,
    "linear": _linear_freqs,
    "llama3": _llama3_freqs,
}


def rope_parameters(hf_config: Mapping) -> dict:
    """Merged rope settings from any config generation.

    transformers 5 writes `rope_parameters` (with rope_theta inside); older configs have a
    top-level `rope_theta` and an optional `rope_scaling` whose kind is `rope_type` or `type`.
    """
    merged: dict = {}
    merged.update(hf_config.get("rope_scaling") or {})
    merged.update(hf_config.get("rope_parameters") or {})
    merged.setdefault("rope_theta", hf_config.get("rope_theta", 10000.0))
    merged["rope_type"] = merged.get("rope_type") or merged.get("type") or "default"
    return merged


class RotaryEmbedding(nn.Module):
    """Rotary position embedding from a given inverse-frequency vector.

    neox style (Llama, HF default) rotates the two halves of the rotary dims; interleaved style
    (GPT-J, DeepSeek's original layout) rotates adjacent pairs. Only the first `rotary_dim`
    dims of each head rotate.
    """

    def __init__(
        self,
        inv_freq: torch.Tensor,
        attention_scale: float = 1.0,
        is_neox_style: bool = True,
    ):
        super().__init__()
        # A plain attribute, not a buffer: model.to(bfloat16) must not round the frequencies.
        self.inv_freq = inv_freq.float()
        self.rotary_dim = 2 * inv_freq.numel()
        self.attention_scale = attention_scale
        self.is_neox_style = is_neox_style

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """cos, sin [num_tokens, rotary_dim // 2] in `dtype`; computed once per forward."""
        inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.float()[:, None] * inv_freq[None, :]  # [num_tokens, rotary_dim // 2]
        cos = freqs.cos() * self.attention_scale
        sin = freqs.sin() * self.attention_scale
        return cos.to(dtype), sin.to(dtype)

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply_rotary(x, cos, sin, self.is_neox_style)

    def cos_sin_full(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cat(cos, cos), cat(-sin, sin)) [num_tokens, rotary_dim] for apply_rotary_full."""
        cos, sin = self.cos_sin(positions, dtype)
        return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox_style: bool = True
) -> torch.Tensor:
    """Rotate x [num_tokens, num_heads, head_dim] by cos/sin [num_tokens, rotary_dim // 2].

    Dims past rotary_dim pass through unchanged.
    """
    rotary_dim = 2 * cos.shape[-1]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    cos, sin = cos[:, None, :], sin[:, None, :]  # [num_tokens, 1, rotary_dim // 2]
    if is_neox_style:
        x1, x2 = rot.chunk(2, dim=-1)
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    out1 = x1 * cos - x2 * sin
    out2 = x2 * cos + x1 * sin
    if is_neox_style:
        rotated = torch.cat((out1, out2), dim=-1)
    else:
        rotated = torch.stack((out1, out2), dim=-1).flatten(-2)
    return rotated if rest.numel() == 0 else torch.cat((rotated, rest), dim=-1)


def rotate_and_cache(
    qkv: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    kv_cache: tuple[torch.Tensor, ...],
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """A fused q/k/v projection's output [tokens, (heads + 2 kv_heads) * head_dim] -> q
    [tokens, heads, head_dim] rotated neox-style, with k rotated and v written to the paged
    cache at slot_mapping. One native call for float32 CPU rows, torch's ops otherwise."""
    k_cache, v_cache = kv_cache
    native = pointwise_kernel()
    if native is not None:  # rope_store checks the tensors itself (None: not taken)
        q = native.rope_store(qkv, num_heads, num_kv_heads, cos, sin, slot_mapping, *kv_cache)
        if q is not None:
            return q
    head_dim = k_cache.shape[-1]
    tokens, kv_size = qkv.shape[0], num_kv_heads * head_dim
    q, k, v = qkv.split([num_heads * head_dim, kv_size, kv_size], dim=-1)
    q = apply_rotary(q.view(tokens, num_heads, head_dim), cos, sin)
    k = apply_rotary(k.view(tokens, num_kv_heads, head_dim), cos, sin)
    write_kv(k_cache, k, slot_mapping)
    write_kv(v_cache, v.view(tokens, num_kv_heads, head_dim), slot_mapping)
    return q


def apply_rotary_full(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """neox-style rotation of every dim of x [num_tokens, num_heads, head_dim] in four ops.

    cos, signed_sin [num_tokens, head_dim] come from RotaryEmbedding.cos_sin_full. With x's
    halves swapped, x * cos + swapped * signed_sin gives x1*cos - x2*sin and x2*cos + x1*sin
    elementwise, bitwise equal to apply_rotary (negation is exact), in 4 ops instead of ~9.
    """
    swapped = x.roll(x.shape[-1] // 2, dims=-1)  # [x2, x1]
    out = x * cos[:, None, :]
    return out.add_(swapped * signed_sin[:, None, :])


def build_rotary(
    rope_params: Mapping,
    rotary_dim: int,
    max_position: int,
    *,
    is_neox_style: bool = True,
    extra_types: Mapping[str, RopeFrequencyFn] | None = None,
) -> RotaryEmbedding:
    """The RotaryEmbedding for `rope_params` (see `rope_parameters`).

    A model that needs a rope type not built in here (YaRN for DeepSeek) passes its frequency
    function in `extra_types` under the type's name.
    """
    types = {**BUILTIN_ROPE_TYPES, **(extra_types or {})}
    rope_type = rope_params.get("rope_type", "default")
    if rope_type not in types:
        raise UnsupportedModelError(
            f"unsupported rope type {rope_type!r}; supported: {sorted(types)}"
        )
    inv_freq, scale = types[rope_type](rope_params, rotary_dim, max_position)
    return RotaryEmbedding(inv_freq, scale, is_neox_style=is_neox_style)


class PreNormDecoderLayer(nn.Module):
    """A pre-norm transformer block: attention and MLP each behind an RMSNorm, with residuals.

    Subclasses build `self_attn`, `mlp`, `input_layernorm` and `post_attention_layernorm`
    (the HF parameter names); the wiring is shared.
    """

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The residual stream is carried separately so each norm can fuse the add.
        if residual is None:
            residual, h = x, self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(h, cos, sin, kv_cache, meta)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class PreNormCausalLM(nn.Module):
    """A decoder-only LM over pre-norm blocks that share one rotary table.

    Subclasses build `model` (embed_tokens, layers, norm), `rotary` and `lm_head`; the forward
    pass and the logits are the same for every such family. A family may declare a fused
    decode step (`attach_fused_decode` setting `native_decode`): decode-only steps go to it
    first, and run the layers when it declines (returns None).
    """

    native_decode: Callable | None = None

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, ...]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """input_ids, positions [num_tokens] -> final-normed hidden [num_tokens, hidden]."""
        h = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary.cos_sin(positions, h.dtype)  # shared by every layer
        if self.native_decode is not None and meta.is_decode_only:
            out = self.native_decode(h, cos, sin, kv_caches, meta)
            if out is not None:
                return out
        residual = None
        for i, (layer, kv_cache) in enumerate(zip(self.model.layers, kv_caches, strict=True)):
            h, residual = layer(h, residual, cos, sin, kv_cache, meta.for_layer(i))
        h, _ = self.model.norm(h, residual)
        return h

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[num_seqs, hidden] -> [num_seqs, vocab] float32."""
        return self.lm_head(hidden).float()
