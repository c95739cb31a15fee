"""Multi-head Latent Attention (DeepSeek-V2/V3) over a paged cache of compressed latents.

Per token and layer the cache holds only the normalised KV latent (kv_lora_rank values) and
the rotary key part shared by all heads (qk_rope_head_dim values), concatenated: for
DeepSeek-V3 576 values instead of the 128 heads x (192 + 128) a full K/V cache would need.

Decoding uses the absorbed form. With kv_b_proj split per head into W_UK [dn, kvr] and
W_UV [dv, kvr], a head's score q_nope . (W_UK c) equals (W_UK^T q_nope) . c, and its output
sum_j p_j W_UV c_j equals W_UV (sum_j p_j c_j). So the query is moved into latent space, the
attention runs as multi-query attention directly over the cached latents, and W_UV is applied
once to the attended latent: full keys and values never exist for the cached context.
Prefill sequences decompress their context with kv_b_proj instead, which costs fewer FLOPs
when many queries share it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from localseek.models.attention import AttentionMetadata, paged_attention, write_kv
from localseek.models.layers import Linear, RMSNorm, apply_rotary


@dataclass(frozen=True)
class MLAArgs:
    """MLA dimensions from an HF DeepSeek config (names as in config.json)."""

    hidden_size: int
    num_heads: int
    q_lora_rank: int | None  # None: q_proj straight from hidden (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rms_norm_eps: float
    attention_bias: bool
    softmax_scale: float  # (qk_nope + qk_rope) ** -0.5, times YaRN's mscale correction
    rope_neox_style: bool  # False: DeepSeek's interleaved rotary pairs

    @property
    def cache_dim(self) -> int:
        """Values cached per token and layer: the latent then the rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


class MLAttention(nn.Module):
    """MLA with HF DeepSeek parameter names; writes the latent cache, attends over it."""

    def __init__(self, args: MLAArgs, dtype: torch.dtype):
        super().__init__()
        self.args = args
        a = args
        hidden, heads = a.hidden_size, a.num_heads
        q_head_dim = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank is None:
            self.q_proj = Linear(hidden, heads * q_head_dim, bias=False, dtype=dtype)
        else:
            self.q_a_proj = Linear(hidden, a.q_lora_rank, bias=a.attention_bias, dtype=dtype)
            self.q_a_layernorm = RMSNorm(a.q_lora_rank, a.rms_norm_eps, dtype=dtype)
            self.q_b_proj = Linear(a.q_lora_rank, heads * q_head_dim, bias=False, dtype=dtype)
        self.kv_a_proj_with_mqa = Linear(hidden, a.cache_dim, bias=a.attention_bias, dtype=dtype)
        self.kv_a_layernorm = RMSNorm(a.kv_lora_rank, a.rms_norm_eps, dtype=dtype)
        self.kv_b_proj = Linear(
            a.kv_lora_rank, heads * (a.qk_nope_head_dim + a.v_head_dim), bias=False, dtype=dtype
        )
        self.o_proj = Linear(heads * a.v_head_dim, hidden, bias=a.attention_bias, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, ...],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """x [num_tokens, hidden] -> [num_tokens, hidden]; stores the tokens' latents first."""
        a = self.args
        num_tokens = x.shape[0]
        q = self._query(x).view(num_tokens, a.num_heads, -1)  # [T, heads, dn + dr]
        q_nope, q_pe = q.split([a.qk_nope_head_dim, a.qk_rope_head_dim], dim=-1)
        q_pe = apply_rotary(q_pe, cos, sin, a.rope_neox_style)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([a.kv_lora_rank, a.qk_rope_head_dim], -1)
        latent = self.kv_a_layernorm(latent)  # [T, kvr]
        # The rotary key is one head shared by all query heads: [T, 1, dr] -> [T, dr].
        k_pe = apply_rotary(k_pe[:, None, :], cos, sin, a.rope_neox_style)[:, 0]
        (cache,) = kv_cache  # [num_blocks, block_size, kvr + dr]
        write_kv(cache, torch.cat((latent, k_pe), dim=-1), meta.slot_mapping)
        out = self._attend(q_nope, q_pe, cache, meta)  # [T, heads, dv]
        return self.o_proj(out.reshape(num_tokens, a.num_heads * a.v_head_dim))

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        if self.args.q_lora_rank is None:
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    def _attend(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Absorbed attention for single-query sequences, decompressed for prefill chunks."""
        if meta.is_decode_only:
            return self.absorbed_attention(q_nope, q_pe, cache, meta)
        split = _split_batch(meta)
        out = q_nope.new_empty(*q_nope.shape[:2], self.args.v_head_dim)
        if split.decode_meta is not None:
            rows = split.decode_rows
            out[rows] = self.absorbed_attention(q_nope[rows], q_pe[rows], cache, split.decode_meta)
        for seq_index, start, length in split.prefills:
            rows = slice(start, start + length)
            out[rows] = self.decompressed_attention(
                q_nope[rows],
                q_pe[rows],
                cache,
                meta.block_tables[seq_index],
                meta.context_lens_list[seq_index],
            )
        return out

    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK [heads, dn, kvr] and W_UV [heads, dv, kvr]: views of kv_b_proj's weight."""
        a = self.args
        w = self.kv_b_proj.weight.view(a.num_heads, a.qk_nope_head_dim + a.v_head_dim, -1)
        return w[:, : a.qk_nope_head_dim], w[:, a.qk_nope_head_dim :]

    def absorbed_attention(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Attention in latent space: q_nope [n, heads, dn], q_pe [n, heads, dr] -> [n, heads, dv].

        Runs as multi-query attention with one "kv head" whose key is the cached latent plus
        rotary part and whose value is the latent alone; never calls kv_b_proj.
        """
        kvr = self.args.kv_lora_rank
        w_uk, w_uv = self.absorbed_weights()
        q_latent = torch.einsum("nhd,hdc->nhc", q_nope, w_uk)  # [n, heads, kvr]
        q_full = torch.cat((q_latent, q_pe), dim=-1)  # [n, heads, kvr + dr]
        k_cache = cache.unsqueeze(2)  # [num_blocks, block_size, 1, kvr + dr]
        v_cache = cache[..., :kvr].unsqueeze(2)  # [num_blocks, block_size, 1, kvr]
        out_latent = paged_attention(
            q_full, k_cache, v_cache, meta, scale=self.args.softmax_scale
        )  # [n, heads, kvr]
        return torch.einsum("nhc,hvc->nhv", out_latent, w_uv)  # [n, heads, dv]

    def decompressed_attention(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        cache: torch.Tensor,
        block_table: torch.Tensor,
        context_len: int,
    ) -> torch.Tensor:
        """One sequence's query_len new tokens over its whole context, with full K/V rebuilt."""
        a = self.args
        query_len, heads = q_nope.shape[:2]
        block_size = cache.shape[1]
        blocks = block_table[: -(-context_len // block_size)]
        entries = cache[blocks].flatten(0, 1)[:context_len]  # [ctx, kvr + dr]
        latent, k_pe = entries.split([a.kv_lora_rank, a.qk_rope_head_dim], dim=-1)
        kv = self.kv_b_proj(latent).view(context_len, heads, -1)  # [ctx, heads, dn + dv]
        k_nope, v = kv.split([a.qk_nope_head_dim, a.v_head_dim], dim=-1)
        k_pe = k_pe[:, None, :].expand(context_len, heads, a.qk_rope_head_dim)
        k = torch.cat((k_nope, k_pe), dim=-1)  # [ctx, heads, dn + dr]
        q = torch.cat((q_nope, q_pe), dim=-1)  # [query_len, heads, dn + dr]
        # [1, heads, len, dim] for SDPA
        q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))
        if context_len == query_len:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=a.softmax_scale)
        else:
            # Query i sits at position context_len - query_len + i.
            query_pos = torch.arange(context_len - query_len, context_len, device=q.device)
            key_pos = torch.arange(context_len, device=q.device)
            mask = key_pos[None, :] <= query_pos[:, None]  # [query_len, ctx]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=a.softmax_scale)
        return out[0].transpose(0, 1)  # [query_len, heads, dv]


@dataclass(frozen=True)
class _BatchSplit:
    """A mixed step's single-query sequences (absorbed path) and prefill chunks."""

    decode_rows: torch.Tensor | None  # [n] their rows in the step's tokens
    decode_meta: AttentionMetadata | None  # the decode sequences alone, all single-query
    prefills: tuple[tuple[int, int, int], ...]  # (sequence index, first row, query_len)


def _split_batch(meta: AttentionMetadata) -> _BatchSplit:
    """Built once per step and shared by every layer through meta.memo."""
    key = ("mla_split",)
    if key not in meta.memo:
        meta.memo[key] = _build_split(meta)
    return meta.memo[key]


def _build_split(meta: AttentionMetadata) -> _BatchSplit:
    starts = [0, *itertools.accumulate(meta.query_lens_list)]
    decode = [i for i, n in enumerate(meta.query_lens_list) if n == 1]
    prefills = tuple((i, starts[i], n) for i, n in enumerate(meta.query_lens_list) if n > 1)
    if not decode:
        return _BatchSplit(None, None, prefills)
    device = meta.block_tables.device
    index = torch.tensor(decode, device=device)
    rows = torch.tensor([starts[i] for i in decode], device=device)
    context_lens = [meta.context_lens_list[i] for i in decode]
    decode_meta = AttentionMetadata(
        slot_mapping=meta.slot_mapping[rows],
        block_tables=meta.block_tables[index],
        context_lens=meta.context_lens[index],
        query_start_loc=torch.arange(len(decode) + 1, dtype=torch.int32, device=device),
        query_lens_list=[1] * len(decode),
        context_lens_list=context_lens,
        block_size=meta.block_size,
        max_context_len=max(context_lens),
        is_decode_only=True,
    )
    return _BatchSplit(rows, decode_meta, prefills)
