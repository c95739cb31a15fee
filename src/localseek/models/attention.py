"""Paged attention: the metadata a forward pass needs and the torch reference implementation.

The runner builds one AttentionMetadata per step for a flat batch of tokens from many
sequences (no padding): each sequence contributes `query_len` new tokens whose KV is written
to `slot_mapping` and which attend to that sequence's whole context through its block table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class KVCacheSpec:
    """What one layer stores per token in the paged pool.

    `shapes` lists the per-token shape of each tensor the layer keeps, e.g. ((kv_heads, head_dim),
    (kv_heads, head_dim)) for K and V, or ((kv_lora_rank + rope_dim,),) for MLA's latent.
    """

    shapes: tuple[tuple[int, ...], ...]
    sliding_window: int | None = None

    def values_per_token(self) -> int:
        total = 0
        for shape in self.shapes:
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


class AttentionWorkspace:
    """Grow-only scratch buffers reused by every layer and step (the runner owns one).

    On CPU a fresh multi-megabyte tensor is page-faulted in on every allocation; gathering the
    decode batch's K/V into a reused buffer measured ~5x faster than into a new one.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if (
            buf is None
            or buf.numel() < numel
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)


@dataclass
class AttentionMetadata:
    """One step's batch layout. Tensors live on the model's device.

    Sequence i owns query rows query_start_loc[i]:query_start_loc[i+1]; its tokens sit at
    positions context_lens[i]-query_lens[i] .. context_lens[i]-1 of its context.
    """

    slot_mapping: torch.Tensor  # [num_tokens] int64: block_id * block_size + offset
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, padded with 0
    context_lens: torch.Tensor  # [num_seqs] int32: tokens in context after this step
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32
    query_lens_list: list[int]  # host copies, for per-sequence loops
    context_lens_list: list[int]
    block_size: int
    max_context_len: int
    is_decode_only: bool  # every sequence has query_len == 1
    # Tensors derived from the fields above (masks, row indices) that every layer would
    # otherwise rebuild; filled lazily by the attention functions, dropped with the step.
    memo: dict = field(default_factory=dict, repr=False, compare=False)
    workspace: AttentionWorkspace | None = None  # reusable scratch; None: allocate per call


# ---- the torch reference implementation ------------------------------------------------------

# (scale, sliding_window, soft_cap) as passed to paged_attention.
_Opts = tuple[float, "int | None", "float | None"]


def write_kv(cache: torch.Tensor, values: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store values [num_tokens, *shape] into cache [num_blocks, block_size, *shape] at slots."""
    flat = cache.view(-1, *cache.shape[2:])  # [num_blocks * block_size, *shape]
    flat.index_copy_(0, slot_mapping, values.to(cache.dtype))


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
) -> torch.Tensor:
    """Attention of every query row to its sequence's cached context (KV already written).

    q [num_tokens, q_heads, head_dim]; k_cache [num_blocks, block_size, kv_heads, head_dim];
    v_cache [num_blocks, block_size, kv_heads, v_dim] -> [num_tokens, q_heads, v_dim].
    q_heads must be a multiple of kv_heads (GQA: query head h reads kv head h // group).
    `sliding_window` w: a token sees itself and the w-1 tokens before it. `soft_cap` c:
    scores become c * tanh(scores / c) before masking.

    Decoding sequences (one query row) go through one padded, vectorized call; sequences with
    several query rows (prefill chunks) are handled one at a time with a causal offset mask.
    """
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    opts: _Opts = (scale, sliding_window, soft_cap)
    decode = _decode_batch(meta, k_cache.shape[1])
    if meta.is_decode_only:
        return _decode_attention(q, k_cache, v_cache, meta, decode, opts)
    out = q.new_empty(q.shape[0], q.shape[1], v_cache.shape[-1])
    if decode is not None:
        out[decode.rows] = _decode_attention(q[decode.rows], k_cache, v_cache, meta, decode, opts)
    starts = _query_starts(meta)
    for i, query_len in enumerate(meta.query_lens_list):
        if query_len > 1:
            rows = slice(starts[i], starts[i] + query_len)
            out[rows] = _prefix_attention(
                q[rows], k_cache, v_cache, meta.block_tables[i], meta.context_lens_list[i], opts
            )
    return out


@dataclass(frozen=True)
class _DecodeBatch:
    """The step's single-query sequences, laid out for the padded path."""

    rows: torch.Tensor | None  # [n] their query rows in q; None when every row decodes
    blocks: torch.Tensor  # [n * num_blocks] int64: each row's block table, flattened
    context_lens: torch.Tensor  # [n]
    num_blocks: int  # blocks per row, covering the longest context
    padded_len: int  # num_blocks * block_size


def _memo(meta: AttentionMetadata, key: tuple, build):
    if key not in meta.memo:
        meta.memo[key] = build()
    return meta.memo[key]


def _query_starts(meta: AttentionMetadata) -> list[int]:
    return _memo(meta, ("starts",), lambda: [0, *itertools.accumulate(meta.query_lens_list)])


def _decode_batch(meta: AttentionMetadata, block_size: int) -> _DecodeBatch | None:
    def build() -> _DecodeBatch | None:
        if meta.is_decode_only:
            max_len = meta.max_context_len
            rows, tables, lens = None, meta.block_tables, meta.context_lens
        else:
            seqs = [i for i, n in enumerate(meta.query_lens_list) if n == 1]
            if not seqs:
                return None
            max_len = max(meta.context_lens_list[i] for i in seqs)
            starts = _query_starts(meta)
            device = meta.block_tables.device
            index = torch.tensor(seqs, device=device)
            rows = torch.tensor([starts[i] for i in seqs], device=device)
            tables, lens = meta.block_tables[index], meta.context_lens[index]
        num_blocks = -(-max_len // block_size)
        blocks = tables[:, :num_blocks].flatten().long()
        return _DecodeBatch(rows, blocks, lens, num_blocks, num_blocks * block_size)

    return _memo(meta, ("decode", block_size), build)


def _decode_mask(
    meta: AttentionMetadata, batch: _DecodeBatch, sliding_window: int | None, dtype: torch.dtype
) -> torch.Tensor:
    """[n, 1, 1, padded_len] additive mask in `dtype`: 0 where the key is in the (windowed)
    context, -inf elsewhere. Additive, because SDPA converts a bool mask on every call."""

    def build() -> torch.Tensor:
        key_pos = torch.arange(batch.padded_len, device=batch.context_lens.device)[None, :]
        lens = batch.context_lens.long()[:, None]
        mask = key_pos < lens
        if sliding_window is not None:
            # The query sits at lens - 1 and sees keys after (lens - 1) - window.
            mask &= key_pos >= lens - sliding_window
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return additive.masked_fill_(~mask, float("-inf"))[:, None, None, :]

    return _memo(meta, ("decode_mask", batch.padded_len, sliding_window, dtype), build)


def _decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    batch: _DecodeBatch,
    opts: _Opts,
) -> torch.Tensor:
    """One query per sequence: q [n, q_heads, d] -> [n, q_heads, v_dim]."""
    scale, sliding_window, soft_cap = opts
    n, q_heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    # [n, padded_len, kv_heads, d] viewed as [n, kv_heads, padded_len, d]
    k = _gather_blocks(k_cache, batch, meta.workspace, "decode_k").transpose(1, 2)
    v = _gather_blocks(v_cache, batch, meta.workspace, "decode_v").transpose(1, 2)
    # The query heads sharing a kv head become that head's query rows, so K/V are read once
    # per kv head instead of being repeated per query head: [n, kv_heads, group, d].
    q = q.view(n, kv_heads, q_heads // kv_heads, head_dim)
    if soft_cap is None:
        mask = _decode_mask(meta, batch, sliding_window, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    else:
        mask = _decode_mask(meta, batch, sliding_window, torch.float32) == 0
        out = _attend(q, k, v, mask, scale, soft_cap)  # [n, kv_heads, group, v_dim]
    return out.reshape(n, q_heads, -1)


def _gather_blocks(
    cache: torch.Tensor, batch: _DecodeBatch, workspace: AttentionWorkspace | None, name: str
) -> torch.Tensor:
    """cache [num_blocks, block_size, *shape] -> [n, padded_len, *shape] through block tables."""
    n = batch.context_lens.shape[0]
    if workspace is None:
        out = torch.index_select(cache, 0, batch.blocks)
    else:
        out = workspace.get(name, (batch.blocks.shape[0], *cache.shape[1:]), cache)
        torch.index_select(cache, 0, batch.blocks, out=out)
    return out.view(n, batch.padded_len, *cache.shape[2:])


def _prefix_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    context_len: int,
    opts: _Opts,
) -> torch.Tensor:
    """One sequence's query_len new tokens over its context: q [query_len, q_heads, d]."""
    scale, sliding_window, soft_cap = opts
    query_len = q.shape[0]
    block_size = k_cache.shape[1]
    blocks = block_table[: -(-context_len // block_size)].long()
    # [context_len, kv_heads, d] -> [1, kv_heads, context_len, d]
    k = k_cache.index_select(0, blocks).flatten(0, 1)[:context_len].transpose(0, 1)[None]
    v = v_cache.index_select(0, blocks).flatten(0, 1)[:context_len].transpose(0, 1)[None]
    q = q.transpose(0, 1)[None]  # [1, q_heads, query_len, d]
    if context_len == query_len and sliding_window is None and soft_cap is None:
        # Nothing cached before this chunk: plain causal attention (fast fused kernel).
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
    else:
        # Query i sits at position context_len - query_len + i.
        query_pos = torch.arange(context_len - query_len, context_len, device=q.device)[:, None]
        key_pos = torch.arange(context_len, device=q.device)[None, :]
        mask = key_pos <= query_pos  # [query_len, context_len]
        if sliding_window is not None:
            mask &= key_pos > query_pos - sliding_window
        out = _attend(q, k, v, mask, scale, soft_cap)
    return out[0].transpose(0, 1)  # [query_len, q_heads, v_dim]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    soft_cap: float | None,
) -> torch.Tensor:
    """Masked attention, q [b, q_heads, lq, d], k/v [b, kv_heads, lk, *], mask bool broadcastable."""
    gqa = q.shape[1] != k.shape[1]
    if soft_cap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    if gqa:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [b, h, lq, lk]
    scores = soft_cap * torch.tanh(scores / soft_cap)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1).to(v.dtype)
    return torch.matmul(probs, v)
