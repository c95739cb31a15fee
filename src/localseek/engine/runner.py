"""ModelRunner: owns the paged KV tensors, turns scheduled sequences into one forward pass."""

from __future__ import annotations

import itertools
import math
import mmap
import re
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from localseek.engine.kv_layout import KVLayout, first_visible_block, single_group
from localseek.models.attention import AttentionMetadata, AttentionWorkspace, KVCacheSpec

if TYPE_CHECKING:
    from localseek.engine.scheduler import ScheduledSeq


_CPU_DECODE_GROUP_BYTES = 1 << 20


@dataclass
class StepBatch:
    """The flat tensors of one step (no padding) and which hidden rows to turn into logits."""

    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    meta: AttentionMetadata
    sample_rows: torch.Tensor  # [num_sampled] int64: last row of each seq that reaches its end


class ModelRunner:
    """Executes the model for a scheduled batch. Makes no decisions: the scheduler did.

    KV tensors: one tuple per layer, one tensor per KVCacheSpec shape, each
    [num_blocks, block_size, *shape]. They are zero-filled so that masked, never-written slots
    hold finite values (0 * NaN would poison the attention output). With several KV cache
    groups (`layout`), layers of different groups in the same page slot share one tensor: a
    block id belongs to one group at a time, so their writes never meet. Without a layout,
    one group holds every layer (sliding windows then only mask).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        block_size: int,
        num_blocks: int,
        device: torch.device | str,
        dtype: torch.dtype,
        layout: KVLayout | None = None,
    ):
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = torch.device(device)
        self.dtype = dtype
        specs = model.kv_cache_specs()
        self.layout = layout or single_group(len(specs))
        assert self.layout.num_layers == len(specs), (self.layout, len(specs))
        self._layer_groups = [self.layout.group_of(i) for i in range(len(specs))]
        self.kv_caches = allocate_kv_caches(
            specs, self.layout, num_blocks, block_size, dtype, self.device
        )
        # Scratch reused by every step's attention (decode K/V gathers).
        self.workspace = AttentionWorkspace()
        # On CPU, decode attention gathers and attends ~1 MiB of K/V at a time, sequences of
        # similar length together: less padding, and the gathered copy is still in L2 when
        # attention reads it (64 decodes, 60M Qwen2, bf16, 1 thread: 136 -> 87 ms per step;
        # 0.5-4 MiB all measured alike). A GPU gains nothing from splitting: one group.
        self.decode_group_bytes = _CPU_DECODE_GROUP_BYTES if self.device.type == "cpu" else 1 << 62

    @staticmethod
    def kv_bytes_per_token(model: torch.nn.Module, dtype: torch.dtype) -> int:
        """Bytes of KV cache one token occupies across all layers."""
        return kv_bytes_per_token(model.kv_cache_specs(), dtype)

    @torch.inference_mode()
    def execute(self, scheduled: SequenceOf[ScheduledSeq]) -> torch.Tensor:
        """Run one step; logits [num_sampled, vocab] float32, in the order of `scheduled`.

        Only sequences whose step reaches `seq.num_tokens` (a finished prefill or a decode)
        get a row; a prefill chunk that stops short of the prompt's end gets none.
        """
        batch = self.prepare(scheduled)
        if self.device.type != "cpu":
            hidden = self.model(batch.input_ids, batch.positions, self.kv_caches, batch.meta)
            return self.model.compute_logits(hidden[batch.sample_rows])
        # Denormal floats (|x| < 1.2e-38) take a slow microcode path on x86: some attention
        # calls ran ~400x slower on the real Gemma weights. Flush them to zero for the forward
        # pass only; the flag is per thread, and the caller's thread gets IEEE floats back.
        torch.set_flush_denormal(True)
        try:
            hidden = self.model(batch.input_ids, batch.positions, self.kv_caches, batch.meta)
            return self.model.compute_logits(hidden[batch.sample_rows])
        finally:
            torch.set_flush_denormal(False)

    def prepare(self, scheduled: SequenceOf[ScheduledSeq]) -> StepBatch:
        """Flatten the scheduled token ranges into input tensors and attention metadata."""
        assert scheduled, "a step needs at least one scheduled sequence"
        input_ids: list[int] = []
        positions: list[int] = []
        ranges: list[tuple[int, int]] = []
        sample_rows: list[int] = []
        for item in scheduled:
            seq, start = item.seq, item.seq.num_computed_tokens
            end = start + item.num_new_tokens
            assert item.num_new_tokens > 0 and end <= seq.num_tokens, (seq.request_id, start, end)
            if end - start == 1:  # decode: avoid copying the whole token list
                input_ids.append(seq.token_at(start))
            else:
                input_ids.extend(seq.token_slice(start, end))
            positions.extend(range(start, end))
            ranges.append((start, end))
            if end == seq.num_tokens:
                sample_rows.append(len(input_ids) - 1)
        query_lens = [end - start for start, end in ranges]
        query_start = [0, *itertools.accumulate(query_lens)]
        shared = (self._tensor(query_start, torch.int32), query_lens)
        metas = [
            self._group_meta(g, scheduled, ranges, shared) for g in range(self.layout.num_groups)
        ]
        meta = metas[0]
        if len(metas) > 1:  # one group: every layer uses metas[0] itself
            meta.layer_metas = [metas[g] for g in self._layer_groups]
        return StepBatch(
            input_ids=self._tensor(input_ids, torch.int64),
            positions=self._tensor(positions, torch.int64),
            meta=meta,
            sample_rows=self._tensor(sample_rows, torch.int64),
        )

    def _group_meta(
        self,
        group: int,
        scheduled: SequenceOf[ScheduledSeq],
        ranges: list[tuple[int, int]],
        shared: tuple[torch.Tensor, list[int]],
    ) -> AttentionMetadata:
        """One KV cache group's view of the step: its block tables and KV slots.

        A sliding-window group's table starts at the first block the step's first query can
        see; earlier entries are the null block (already given back). Attention only uses
        positions relative to the table's start (keys are stored with rope applied), so the
        group's context lengths are counted from there too.
        """
        bs = self.block_size
        window = self.layout.groups[group].sliding_window
        slots: list[int] = []
        tables: list[list[int]] = []
        context_lens: list[int] = []
        for item, (start, end) in zip(scheduled, ranges, strict=True):
            table = item.seq.block_tables[group]
            num_blocks = -(-end // bs)
            assert len(table) >= num_blocks, f"{item.seq.request_id}: {len(table)} < {num_blocks}"
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            first = 0 if window is None else first_visible_block(start, window, bs)
            tables.append(table[first:num_blocks])
            context_lens.append(end - first * bs)
        max_blocks = max(len(t) for t in tables)
        padded = [t + [0] * (max_blocks - len(t)) for t in tables]
        query_start_loc, query_lens = shared
        return AttentionMetadata(
            slot_mapping=self._tensor(slots, torch.int64),
            block_tables=self._tensor(padded, torch.int32),
            context_lens=self._tensor(context_lens, torch.int32),
            query_start_loc=query_start_loc,
            query_lens_list=query_lens,
            context_lens_list=context_lens,
            block_size=bs,
            max_context_len=max(context_lens),
            is_decode_only=all(n == 1 for n in query_lens),
            workspace=self.workspace,
            decode_group_bytes=self.decode_group_bytes,
        )

    def _tensor(self, values: list, dtype: torch.dtype) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.tensor(values, dtype=dtype)
        # Host-side build, then one asynchronous copy from pinned memory.
        return torch.tensor(values, dtype=dtype).pin_memory().to(self.device, non_blocking=True)


def allocate_kv_caches(
    specs: SequenceOf[KVCacheSpec],
    layout: KVLayout,
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> list[tuple[torch.Tensor, ...]]:
    """Per layer, per spec shape, a zeroed [num_blocks, block_size, *shape] tensor, shared by
    the layers that sit in the same page slot of different groups."""
    slot_tensors = [
        tuple(
            zeroed_pool((num_blocks, block_size, *shape), dtype, device)
            for shape in specs[layer].shapes
        )
        for layer in layout.groups[0].layers
    ]
    return [slot_tensors[layout.slot_of(i)] for i in range(len(specs))]


def zeroed_pool(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed tensor for the KV pool. On the CPU it lives in an anonymous memory map, whose
    pages the kernel zeroes on first touch: the pool costs resident memory only as blocks are
    used, not its full size at start-up (torch.zeros writes every page)."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = math.prod(shape) * torch.tensor([], dtype=dtype).element_size()
    region = mmap.mmap(-1, max(1, nbytes))  # anonymous, private, zero-filled
    return torch.frombuffer(region, dtype=torch.uint8, count=nbytes).view(dtype).view(shape)


def kv_bytes_per_token(specs: SequenceOf[KVCacheSpec], dtype: torch.dtype) -> int:
    """Bytes one token of context occupies across all layers' KV tensors."""
    element = torch.tensor([], dtype=dtype).element_size()
    return sum(spec.values_per_token() for spec in specs) * element


def num_blocks_for_budget(
    model: torch.nn.Module, dtype: torch.dtype, block_size: int, budget_bytes: int
) -> int:
    """How many KV blocks of `block_size` tokens fit in `budget_bytes` (0 if none)."""
    per_block = kv_bytes_per_token(model.kv_cache_specs(), dtype) * block_size
    return max(0, budget_bytes // max(1, per_block))


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16 instructions).

    There bf16 weights halve the bytes every matmul streams: on a 2-core AVX512-BF16 EPYC,
    a Qwen2-1.5B-shaped layer ran 1.4-2x faster in bf16 than in fp32 for one token and 2-3x
    for batches. Without those instructions bf16 matmuls convert on the fly and lose to fp32.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", text) is not None
