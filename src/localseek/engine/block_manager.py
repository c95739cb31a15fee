"""Paged KV block allocation with hash-chained prefix reuse, ref counts and LRU eviction. No torch.

The pool is `num_blocks` blocks of `block_size` token slots. Each sequence owns one block table
per KV cache group (`seq.block_tables[g]`, logical block i -> physical block id; see
kv_layout.py): one table for a model whose layers all attend alike, one per group for a model
that mixes full-attention and sliding-window layers. Every group's table has an entry for every
logical block; in a sliding-window group, blocks that fell out of the window are given back to
the pool and their entries point at the null block (id 0, reserved, never written or read).

A block whose tokens are all computed is registered under (group, chained content hash),
sha256(parent hash + its token ids), so a later sequence with the same token prefix takes the
block instead of recomputing it. When the last user of a registered block lets go, the block
keeps its contents and waits in an LRU queue; it is evicted (its hash forgotten) only when a
fresh block is needed and no blank block is left.

A block is in exactly one of three states:
    in use     ref_count > 0, held by one or more block tables of one group (shared prefixes)
    cached     ref_count == 0, registered hash, in the LRU queue (reusable, evictable)
    blank      ref_count == 0, no hash, in the blank queue
`num_free_blocks()` counts cached + blank: both can be handed out now.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass

from localseek.engine.kv_layout import first_visible_block
from localseek.engine.sequence import Sequence

NULL_BLOCK = 0  # stands for a window block given back; reserved only when a window group exists


@dataclass
class _Block:
    block_id: int
    ref_count: int = 0
    key: tuple[int, bytes] | None = None  # (group, chain hash) while registered in the cache


@dataclass
class _SeqState:
    """What the manager remembers about a sequence holding blocks."""

    seq: Sequence
    # Chain hashes of its full computed blocks (registered or not: a duplicate of an
    # already-registered block still needs its hash to extend the chain).
    hashes: list[bytes]
    # Per group: table entries below this index are the null block (out of the window).
    released: list[int]


def chain_hash(parent: bytes | None, token_ids: list[int]) -> bytes:
    """Hash of a full block given its parent's hash: equal only for an equal whole prefix.

    sha256 rather than Python's hash(): a collision would hand one request another request's
    KV, and on a shared server prompts are chosen by clients, so the hash must not be forgeable.
    """
    digest = hashlib.sha256(parent or b"root")
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


class BlockManager:
    """Hands out KV blocks to sequences; reuses cached full blocks for shared prefixes.

    `windows[g]` is group g's sliding window (None: full attention). `max_step_tokens` bounds
    the tokens one sequence computes in a step (the scheduler's token budget); it bounds how
    many blocks a window group needs at once. None: no bound is assumed.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool,
        windows: SequenceOf[int | None] = (None,),
        max_step_tokens: int | None = None,
    ):
        assert windows and block_size > 0, (windows, block_size)
        self.windows = tuple(windows)
        self._first_id = NULL_BLOCK + 1 if any(w is not None for w in self.windows) else 0
        assert num_blocks > self._first_id, (num_blocks, self.windows)
        self.num_total_blocks = num_blocks - self._first_id
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.max_step_tokens = max_step_tokens
        self._blocks = [_Block(i) for i in range(num_blocks)]
        self._blank: deque[int] = deque(range(self._first_id, num_blocks))
        # Cached (ref 0, hashed) blocks, least recently released first: eviction takes the head.
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._by_key: dict[tuple[int, bytes], int] = {}
        self._states: dict[str, _SeqState] = {}
        # Prefix-cache counters in tokens, for metrics: looked up, and found.
        self.prefix_queries = 0
        self.prefix_hits = 0

    @property
    def num_groups(self) -> int:
        return len(self.windows)

    # ---- capacity ---------------------------------------------------------------------------

    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now: blank plus cached-but-unused (evictable)."""
        return len(self._blank) + len(self._lru)

    def num_cached_blocks(self) -> int:
        """Unused blocks that still hold reusable prefix KV."""
        return len(self._lru)

    def ref_count(self, block_id: int) -> int:
        """How many live block tables hold the block."""
        return self._blocks[block_id].ref_count

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _first_needed(self, window: int, position: int) -> int:
        return first_visible_block(position, window, self.block_size)

    def blocks_needed(self, num_tokens: int) -> int:
        """Most blocks a sequence of `num_tokens` tokens holds at once, over all groups."""
        total = 0
        for window in self.windows:
            blocks = self.blocks_for(num_tokens)
            if window is not None:
                step = min(num_tokens, self.max_step_tokens or num_tokens)
                # Keys of the window before the step plus the step's own tokens, on any offset.
                blocks = min(blocks, self.blocks_for(window - 1 + step) + 1)
            total += blocks
        return total

    def can_ever_fit(self, num_tokens: int) -> bool:
        """Whether the whole pool, with nothing else running, can hold `num_tokens` slots."""
        return self.blocks_needed(num_tokens) <= self.num_total_blocks

    @property
    def capacity_tokens(self) -> int:
        """The longest context one sequence can have in an otherwise empty pool."""
        low, high = 0, self.num_total_blocks * self.block_size * self.num_groups
        while low < high:  # blocks_needed grows with num_tokens: bisect
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.can_ever_fit(mid) else (low, mid - 1)
        return low

    def usage(self) -> float:
        """Fraction of the pool held by live sequences (cached unused blocks count as free)."""
        return 1.0 - self.num_free_blocks() / self.num_total_blocks

    # ---- prefix cache -----------------------------------------------------------------------

    def _cached_prefix(self, seq: Sequence) -> tuple[list[bytes], list[list[int]]]:
        """Chain hashes and per-group block tables of the longest reusable cached prefix.

        Full-attention groups need every block of the prefix cached; a window group only the
        blocks the first computed token can see (the rest become null entries). Capped so at
        least the last token is left to compute: its logits are needed to sample. A preempted
        sequence looks up its output tokens too (they are part of its context).
        """
        empty: list[list[int]] = [[] for _ in self.windows]
        if not self.enable_prefix_caching:
            return [], empty
        bs = self.block_size
        hashes: list[bytes] = []
        found: list[list[int | None]] = [[] for _ in self.windows]
        parent: bytes | None = None
        for i in range((seq.num_tokens - 1) // bs):
            parent = chain_hash(parent, seq.token_slice(i * bs, (i + 1) * bs))
            ids = [self._by_key.get((g, parent)) for g in range(self.num_groups)]
            if any(b is None for b, w in zip(ids, self.windows, strict=True) if w is None):
                break
            hashes.append(parent)
            for g, block_id in enumerate(ids):
                found[g].append(block_id)
        hit = self._longest_window_hit(found, len(hashes))
        tables: list[list[int]] = []
        for window, blocks in zip(self.windows, found, strict=True):
            first = 0 if window is None else self._first_needed(window, hit * bs)
            kept = blocks[first:hit]
            assert None not in kept, (window, first, hit)  # _longest_window_hit checked them
            tables.append([NULL_BLOCK] * first + kept)  # type: ignore[operator]
        return hashes[:hit], tables

    def _longest_window_hit(self, found: list[list[int | None]], limit: int) -> int:
        """Largest block count <= limit whose window groups hold every block a query needs."""
        runs = []  # runs[g][i]: consecutive cached blocks of group g ending at block i
        for window, blocks in zip(self.windows, found, strict=True):
            if window is None:
                continue
            run, count = [], 0
            for block_id in blocks:
                count = count + 1 if block_id is not None else 0
                run.append(count)
            runs.append((window, run))
        for hit in range(limit, 0, -1):
            if all(
                run[hit - 1] >= hit - self._first_needed(window, hit * self.block_size)
                for window, run in runs
            ):
                return hit
        return 0

    def lookup_prefix(self, seq: Sequence) -> int:
        """Tokens of the sequence reusable from the cache now (a block multiple, < num_tokens)."""
        return len(self._cached_prefix(seq)[0]) * self.block_size

    # ---- allocation -------------------------------------------------------------------------

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Ensure every group's table covers `num_computed_tokens + num_new_tokens` slots.

        On the first call for a sequence the cached prefix is taken first and
        `seq.num_computed_tokens` jumps to the hit, so `num_new_tokens` counts from there.
        Window groups first give back blocks no token from here on can see (safe whether or
        not the allocation succeeds). Returns False, taking nothing, if the pool cannot supply
        the blocks now.
        """
        assert num_new_tokens > 0, num_new_tokens
        state = self._states.get(seq.request_id)
        if state is None:
            assert seq.num_computed_tokens == 0, (seq.request_id, seq.num_computed_tokens)
            hit_hashes, hit_tables = self._cached_prefix(seq)
            computed, have = len(hit_hashes) * self.block_size, len(hit_hashes)
            # Hit blocks nobody uses sit in the LRU queue and count as free: taking them uses pool.
            revived = sum(
                1
                for table in hit_tables
                for b in table
                if not self.is_null(b) and self._blocks[b].ref_count == 0
            )
        else:
            computed, have, revived = seq.num_computed_tokens, len(seq.block_tables[0]), 0
            self._release_out_of_window(state, computed)
        end = computed + num_new_tokens  # slots needed: KV is never made for unknown tokens
        assert end <= seq.num_tokens, (seq.request_id, end, seq.num_tokens)
        per_group = max(0, self.blocks_for(end) - have)
        if per_group * self.num_groups + revived > self.num_free_blocks():
            return False
        if state is None:
            self._start(seq, hit_hashes, hit_tables)
        for table in seq.block_tables:
            table.extend(self._take_fresh() for _ in range(per_group))
        return True

    def _start(self, seq: Sequence, hit_hashes: list[bytes], hit_tables: list[list[int]]) -> None:
        for table in hit_tables:
            for block_id in table:
                if self.is_null(block_id):
                    continue
                block = self._blocks[block_id]
                if block.ref_count == 0:
                    del self._lru[block_id]
                block.ref_count += 1
        hit = len(hit_hashes) * self.block_size
        self.prefix_queries += seq.num_tokens
        self.prefix_hits += hit
        seq.block_tables = [list(table) for table in hit_tables]
        seq.num_computed_tokens = hit
        if seq.num_preemptions == 0:
            # Reported to the client as cached prompt tokens; a resumed sequence keeps its first.
            seq.num_cached_tokens = min(hit, seq.num_prompt_tokens)
        released = [0 if w is None else self._first_needed(w, hit) for w in self.windows]
        self._states[seq.request_id] = _SeqState(seq, list(hit_hashes), released)

    def _release_out_of_window(self, state: _SeqState, computed: int) -> None:
        """Give back window-group blocks that no query at `computed` or later can see."""
        for g, window in enumerate(self.windows):
            if window is None:
                continue
            table = state.seq.block_tables[g]
            keep_from = min(self._first_needed(window, computed), len(table))
            for i in range(state.released[g], keep_from):
                self._release(table[i])
                table[i] = NULL_BLOCK
            state.released[g] = max(state.released[g], keep_from)

    def _take_fresh(self) -> int:
        """A block for new KV: a blank one if any, else evict the least recently used cached one."""
        if self._blank:
            block_id = self._blank.popleft()
        else:
            block_id, _ = self._lru.popitem(last=False)
            block = self._blocks[block_id]
            del self._by_key[block.key]
            block.key = None
        self._blocks[block_id].ref_count = 1
        return block_id

    def is_null(self, block_id: int) -> bool:
        """Whether a table entry is the null block (a window block already given back)."""
        return block_id == NULL_BLOCK and self._first_id > NULL_BLOCK

    def _release(self, block_id: int) -> None:
        block = self._blocks[block_id]
        assert block.ref_count > 0 and not self.is_null(block_id), block_id
        block.ref_count -= 1
        if block.ref_count == 0:
            if block.key is not None:
                self._lru[block_id] = None
            else:
                self._blank.append(block_id)

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly full, fully computed blocks in the prefix cache."""
        state = self._states.get(seq.request_id)
        if state is None or not self.enable_prefix_caching:
            return
        bs, hashes = self.block_size, state.hashes
        num_full = min(seq.num_computed_tokens // bs, len(seq.block_tables[0]))
        for i in range(len(hashes), num_full):
            parent = hashes[-1] if hashes else None
            block_hash = chain_hash(parent, seq.token_slice(i * bs, (i + 1) * bs))
            hashes.append(block_hash)
            for g, table in enumerate(seq.block_tables):
                block = self._blocks[table[i]]
                key = (g, block_hash)
                # Another sequence may have computed the same block first; keep that one
                # registered and leave this copy unhashed (blank again when released).
                if not self.is_null(table[i]) and block.key is None and key not in self._by_key:
                    block.key = key
                    self._by_key[key] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks; registered ones stay cached until evicted."""
        # Tail first: the LRU queue then evicts a sequence's last blocks before its first ones,
        # and first blocks (system prompts, shared prefixes) are the ones most likely reused.
        for table in seq.block_tables:
            for block_id in reversed(table):
                if not self.is_null(block_id):
                    self._release(block_id)
        seq.block_tables = [[] for _ in self.windows]
        self._states.pop(seq.request_id, None)

    def reset_prefix_cache(self) -> None:
        """Forget every cached-but-unused block (e.g. after loading new weights)."""
        while self._lru:
            block_id, _ = self._lru.popitem(last=False)
            block = self._blocks[block_id]
            del self._by_key[block.key]
            block.key = None
            self._blank.append(block_id)

    # ---- invariants -------------------------------------------------------------------------

    def assert_consistent(self) -> None:
        """Check every internal invariant; raises AssertionError naming the first broken one."""
        refs = [0] * len(self._blocks)
        owner: dict[int, int] = {}  # in-use block -> its group: ids never cross groups
        for request_id, state in self._states.items():
            seq = state.seq
            assert seq.request_id == request_id and len(seq.block_tables) == self.num_groups
            lengths = {len(table) for table in seq.block_tables}
            assert len(lengths) == 1 and seq.block_tables[0], (request_id, "ragged tables")
            for g, table in enumerate(seq.block_tables):
                live = table[state.released[g] :]
                assert all(self.is_null(b) for b in table[: state.released[g]]), request_id
                assert not any(self.is_null(b) for b in live), (request_id, g, "null in window")
                assert len(set(live)) == len(live), (request_id, "dup block")
                for block_id in live:
                    refs[block_id] += 1
                    assert owner.setdefault(block_id, g) == g, f"block {block_id} in two groups"
            assert seq.num_computed_tokens <= len(seq.block_tables[0]) * self.block_size
        blank, lru = set(self._blank), set(self._lru)
        assert len(blank) == len(self._blank) and not blank & lru, "queues overlap"
        for block in self._blocks:
            bid = block.block_id
            if self.is_null(bid):
                assert block.ref_count == 0 and block.key is None, "null block used"
                assert bid not in blank and bid not in lru, "null block handed out"
                continue
            assert block.ref_count == refs[bid], (
                f"block {bid}: ref {block.ref_count} != {refs[bid]}"
            )
            if block.ref_count == 0:
                assert (bid in lru) == (block.key is not None), f"block {bid} misfiled"
                assert bid in lru or bid in blank, f"block {bid} leaked"
            else:
                assert bid not in lru and bid not in blank, f"block {bid} in use and free"
            if block.key is not None:
                assert self._by_key.get(block.key) == bid, f"block {bid} hash stale"
                assert block.ref_count == 0 or owner[bid] == block.key[0], f"block {bid} group"
        assert len(self._by_key) == sum(b.key is not None for b in self._blocks)
