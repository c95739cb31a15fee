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

from localseek.kernels.paged_attention import decode_attention_kernel


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
    # Decode rows are attended in groups whose padded K/V fit this many bytes (see
    # _plan_groups); the runner picks it per device. The default never splits.
    decode_group_bytes: int = 1 << 62
    # Models whose layers keep KV in different cache groups (sliding-window and full-attention
    # layers): layer i reads layer_metas[i], which has that group's block tables and slots.
    # None: every layer uses this object.
    layer_metas: list[AttentionMetadata] | None = field(default=None, repr=False)

    def for_layer(self, index: int) -> AttentionMetadata:
        """The metadata layer `index` attends with (its KV cache group's block tables)."""
        return self if self.layer_metas is None else self.layer_metas[index]


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

    Decoding sequences (one query row) go through padded, vectorized calls, one per group of
    similar context length (`meta.decode_group_bytes`); sequences with several query rows
    (prefill chunks) are handled one at a time with a causal offset mask.
    """
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    opts: _Opts = (scale, sliding_window, soft_cap)
    decode = _decode_batch(meta)
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
class _DecodeGroup:
    """Decoding sequences of similar context length, gathered and attended together."""

    rows: torch.Tensor  # [m] int64: the group's rows among the step's decode rows
    blocks: torch.Tensor  # [m * num_blocks] int64: each row's block table, flattened
    context_lens: torch.Tensor  # [m]
    num_blocks: int  # blocks per row, covering the group's longest context
    padded_len: int  # num_blocks * block_size


@dataclass(frozen=True)
class _DecodeBatch:
    """The step's single-query sequences (the padded torch path splits them into groups)."""

    seqs: list[int]  # their sequence indices, in row order
    rows: torch.Tensor | None  # [n] their query rows in q; None when every row decodes
    seq_index: torch.Tensor | None  # [n] seqs as a tensor; None when every sequence decodes


def _memo(meta: AttentionMetadata, key: tuple, build):
    if key not in meta.memo:
        meta.memo[key] = build()
    return meta.memo[key]


def _query_starts(meta: AttentionMetadata) -> list[int]:
    return _memo(meta, ("starts",), lambda: [0, *itertools.accumulate(meta.query_lens_list)])


def _decode_batch(meta: AttentionMetadata) -> _DecodeBatch | None:
    """The step's decoding sequences, or None when none decodes."""

    def build() -> _DecodeBatch | None:
        if meta.is_decode_only:
            return _DecodeBatch(list(range(len(meta.query_lens_list))), None, None)
        seqs = [i for i, n in enumerate(meta.query_lens_list) if n == 1]
        if not seqs:
            return None
        starts = _query_starts(meta)
        device = meta.block_tables.device
        rows = torch.tensor([starts[i] for i in seqs], device=device)
        return _DecodeBatch(seqs, rows, torch.tensor(seqs, device=device))

    return _memo(meta, ("decode",), build)


def _decode_groups(
    meta: AttentionMetadata, batch: _DecodeBatch, block_size: int, kv_bytes: int
) -> tuple[_DecodeGroup, ...]:
    """The decode rows grouped by context length for the padded torch path; `kv_bytes`: K+V
    bytes one context token reads. Built only when that path runs (not for the kernel)."""

    def build() -> tuple[_DecodeGroup, ...]:
        budget = meta.decode_group_bytes // max(1, kv_bytes)  # padded context tokens per group
        lens = [meta.context_lens_list[i] for i in batch.seqs]
        groups = _plan_groups(lens, block_size, budget)
        return tuple(_group(meta, batch.seqs, g, block_size) for g in groups)

    return _memo(meta, ("decode_groups", block_size, kv_bytes), build)


def _plan_groups(lens: list[int], block_size: int, budget_tokens: int) -> list[list[int]]:
    """Indices into `lens`, longest first, cut into groups whose padded size fits the budget.

    Padding every row to the batch's longest context wastes ~half the reads when lengths
    vary, and one batch-wide gather overflows the CPU caches before attention reads it back;
    a group sized to the budget is gathered and attended while still in cache.
    """
    order = sorted(range(len(lens)), key=lambda i: -lens[i])
    groups: list[list[int]] = []
    width = 0
    for i in order:
        if groups and (len(groups[-1]) + 1) * width <= budget_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
            width = -(-lens[i] // block_size) * block_size  # longest in the group comes first
    return groups if len(groups) > 1 else [list(range(len(lens)))]


def _group(
    meta: AttentionMetadata, seqs: list[int], members: list[int], block_size: int
) -> _DecodeGroup:
    device = meta.block_tables.device
    index = [seqs[m] for m in members]
    num_blocks = -(-max(meta.context_lens_list[i] for i in index) // block_size)
    if meta.is_decode_only and index == seqs:  # the whole batch, in its own order
        rows = torch.arange(len(seqs), device=device)
        tables, lens = meta.block_tables, meta.context_lens
    else:
        rows = torch.tensor(members, device=device)
        seq_index = torch.tensor(index, device=device)
        tables, lens = meta.block_tables[seq_index], meta.context_lens[seq_index]
    blocks = tables[:, :num_blocks].flatten().long()
    return _DecodeGroup(rows, blocks, lens, num_blocks, num_blocks * block_size)


def _decode_mask(
    meta: AttentionMetadata, group: _DecodeGroup, sliding_window: int | None, dtype: torch.dtype
) -> torch.Tensor:
    """[m, 1, 1, padded_len] additive mask in `dtype`: 0 where the key is in the (windowed)
    context, -inf elsewhere. Additive, because SDPA converts a bool mask on every call."""

    def build() -> torch.Tensor:
        key_pos = torch.arange(group.padded_len, device=group.context_lens.device)[None, :]
        lens = group.context_lens.long()[:, None]
        mask = key_pos < lens
        if sliding_window is not None:
            # The query sits at lens - 1 and sees keys after (lens - 1) - window.
            mask &= key_pos >= lens - sliding_window
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return additive.masked_fill_(~mask, float("-inf"))[:, None, None, :]

    # Groups stay in meta.memo for the whole step, so id(group) is stable and unique there.
    return _memo(meta, ("decode_mask", id(group), sliding_window, dtype), build)


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
    kernel = decode_attention_kernel() if q.device.type == "cpu" else None
    if kernel is not None and soft_cap is None and kernel.handles(q, k_cache, v_cache):
        # Straight from the paged cache: no gathered copy, no mask (kernels/).
        tables, lens = _memo(meta, ("native", id(batch)), lambda: _native_inputs(meta, batch))
        out = kernel(q, k_cache, v_cache, tables, lens, scale, sliding_window)
        if out is not None:
            return out
    kv_bytes = (k_cache[0, 0].numel() + v_cache[0, 0].numel()) * k_cache.element_size()
    groups = _decode_groups(meta, batch, k_cache.shape[1], kv_bytes)
    if len(groups) == 1:
        return _attend_group(q, k_cache, v_cache, meta, groups[0], opts)
    out = q.new_empty(q.shape[0], q.shape[1], v_cache.shape[-1])
    for group in groups:
        out[group.rows] = _attend_group(q[group.rows], k_cache, v_cache, meta, group, opts)
    return out


def _native_inputs(meta: AttentionMetadata, batch: _DecodeBatch) -> tuple[torch.Tensor, ...]:
    """The decode rows' block tables [n, max_blocks] and context lengths [n], int32."""
    tables, lens = meta.block_tables, meta.context_lens
    if batch.seq_index is not None:
        tables, lens = tables[batch.seq_index], lens[batch.seq_index]
    return tables.to(torch.int32).contiguous(), lens.to(torch.int32).contiguous()


def _attend_group(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    group: _DecodeGroup,
    opts: _Opts,
) -> torch.Tensor:
    """q [m, q_heads, d] of one group's rows -> [m, q_heads, v_dim]."""
    scale, sliding_window, soft_cap = opts
    m, q_heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    # [m, padded_len, kv_heads, d] viewed as [m, kv_heads, padded_len, d]
    k = _gather_blocks(k_cache, group, meta.workspace, "decode_k").transpose(1, 2)
    v = _gather_blocks(v_cache, group, meta.workspace, "decode_v").transpose(1, 2)
    # The query heads sharing a kv head become that head's query rows, so K/V are read once
    # per kv head instead of being repeated per query head: [m, kv_heads, group, d].
    q = q.view(m, kv_heads, q_heads // kv_heads, head_dim)
    if soft_cap is None:
        mask = _decode_mask(meta, group, sliding_window, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    else:
        mask = _decode_mask(meta, group, sliding_window, torch.float32) == 0
        out = _attend(q, k, v, mask, scale, soft_cap)  # [m, kv_heads, group, v_dim]
    return out.reshape(m, q_heads, -1)


def _gather_blocks(
    cache: torch.Tensor, group: _DecodeGroup, workspace: AttentionWorkspace | None, name: str
) -> torch.Tensor:
    """cache [num_blocks, block_size, *shape] -> [m, padded_len, *shape] through block tables."""
    m = group.context_lens.shape[0]
    if workspace is None:
        out = torch.index_select(cache, 0, group.blocks)
    else:
        out = workspace.get(name, (group.blocks.shape[0], *cache.shape[1:]), cache)
        torch.index_select(cache, 0, group.blocks, out=out)
    return out.view(m, group.padded_len, *cache.shape[2:])


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
