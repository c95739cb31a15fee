"""Paged KV block allocation with hash-chained prefix reuse, ref counts and LRU eviction. No torch.

The pool is `num_blocks` blocks of `block_size` token slots. Each sequence owns a block table
(`seq.block_table`, logical block i -> physical block id). A block whose tokens are all computed
is registered under a chained content hash, sha256(parent hash + its token ids), so a later
sequence with the same token prefix takes the block instead of recomputing it. When the last
user of a registered block lets go, the block keeps its contents and waits in an LRU queue; it
is evicted (its hash forgotten) only when a fresh block is needed and no blank block is left.

A block is in exactly one of three states:
    in use     ref_count > 0, held by one or more block tables (shared prefixes: ref > 1)
    cached     ref_count == 0, registered hash, in the LRU queue (reusable, evictable)
    blank      ref_count == 0, no hash, in the blank queue
`num_free_blocks()` counts cached + blank: both can be handed out now.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass

from localseek.engine.sequence import Sequence


@dataclass
class _Block:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None  # set while registered in the prefix cache


def chain_hash(parent: bytes | None, token_ids: list[int]) -> bytes:
    """Hash of a full block given its parent's hash: equal only for an equal whole prefix.

    sha256 rather than Python's hash(): a collision would hand one request another request's
    KV, and on a shared server prompts are chosen by clients, so the hash must not be forgeable.
    """
    digest = hashlib.sha256(parent or b"root")
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


def _tokens(seq: Sequence, start: int, end: int) -> list[int]:
    """Token ids [start, end) without building prompt + output (O(block), not O(sequence))."""
    n = seq.num_prompt_tokens
    if end <= n:
        return seq.prompt_token_ids[start:end]
    if start >= n:
        return seq.output_token_ids[start - n : end - n]
    return seq.prompt_token_ids[start:] + seq.output_token_ids[: end - n]


class BlockManager:
    """Hands out KV blocks to sequences; reuses cached full blocks for shared prefixes."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool):
        assert num_blocks > 0 and block_size > 0, (num_blocks, block_size)
        self.num_total_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        self._blank: deque[int] = deque(range(num_blocks))
        # Cached (ref 0, hashed) blocks, least recently released first: eviction takes the head.
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._by_hash: dict[bytes, int] = {}
        # Per live sequence: chain hashes of its full computed blocks (registered or not; a
        # duplicate of an already-registered block still needs its hash to extend the chain).
        self._seq_hashes: dict[str, list[bytes]] = {}
        self._seqs: dict[str, Sequence] = {}
        # Prefix-cache counters in tokens, for metrics: looked up, and found.
        self.prefix_queries = 0
        self.prefix_hits = 0

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

    def can_ever_fit(self, num_tokens: int) -> bool:
        """Whether the whole pool, with nothing else running, can hold `num_tokens` slots."""
        return self.blocks_for(num_tokens) <= self.num_total_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.num_total_blocks * self.block_size

    def usage(self) -> float:
        """Fraction of the pool held by live sequences (cached unused blocks count as free)."""
        return 1.0 - self.num_free_blocks() / self.num_total_blocks

    # ---- prefix cache -----------------------------------------------------------------------

    def _cached_prefix(self, seq: Sequence) -> tuple[list[int], list[bytes]]:
        """Block ids and chain hashes of the longest cached prefix of the sequence's tokens.

        Capped so at least the last token is left to compute: its logits are needed to sample.
        A preempted sequence looks up its output tokens too (they are part of its context).
        """
        if not self.enable_prefix_caching:
            return [], []
        bs = self.block_size
        max_blocks = (seq.num_tokens - 1) // bs
        ids: list[int] = []
        hashes: list[bytes] = []
        parent: bytes | None = None
        for i in range(max_blocks):
            parent = chain_hash(parent, _tokens(seq, i * bs, (i + 1) * bs))
            block_id = self._by_hash.get(parent)
            if block_id is None:
                break
            ids.append(block_id)
            hashes.append(parent)
        return ids, hashes

    def lookup_prefix(self, seq: Sequence) -> int:
        """Tokens of the sequence reusable from the cache now (a block multiple, < num_tokens)."""
        return len(self._cached_prefix(seq)[0]) * self.block_size

    # ---- allocation -------------------------------------------------------------------------

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Ensure the block table covers `num_computed_tokens + num_new_tokens` slots.

        On the first call for a sequence (empty block table) the cached prefix is taken first
        and `seq.num_computed_tokens` jumps to the hit, so `num_new_tokens` counts from there.
        Returns False, changing nothing, if the pool cannot supply the blocks now.
        """
        assert num_new_tokens > 0, num_new_tokens
        first = not seq.block_table
        hit_ids, hit_hashes = self._cached_prefix(seq) if first else ([], [])
        computed = len(hit_ids) * self.block_size if first else seq.num_computed_tokens
        if first:
            assert seq.num_computed_tokens == 0, (seq.request_id, seq.num_computed_tokens)
        end = computed + num_new_tokens  # slots needed: KV is never made for unknown tokens
        assert end <= seq.num_tokens, (seq.request_id, end, seq.num_tokens)
        have = len(seq.block_table) + len(hit_ids)
        num_fresh = max(0, self.blocks_for(end) - have)
        # Hit blocks nobody uses sit in the LRU queue and count as free: taking them uses pool.
        num_revived = sum(1 for b in hit_ids if self._blocks[b].ref_count == 0)
        if num_fresh + num_revived > self.num_free_blocks():
            return False
        if first:
            self._start(seq, hit_ids, hit_hashes)
        seq.block_table.extend(self._take_fresh() for _ in range(num_fresh))
        return True

    def _start(self, seq: Sequence, hit_ids: list[int], hit_hashes: list[bytes]) -> None:
        assert seq.request_id not in self._seqs, f"{seq.request_id} already holds blocks"
        for block_id in hit_ids:
            block = self._blocks[block_id]
            if block.ref_count == 0:
                del self._lru[block_id]
            block.ref_count += 1
        hit = len(hit_ids) * self.block_size
        self.prefix_queries += seq.num_tokens
        self.prefix_hits += hit
        seq.block_table.extend(hit_ids)
        seq.num_computed_tokens = hit
        if seq.num_preemptions == 0:
            # Reported to the client as cached prompt tokens; a resumed sequence keeps its first.
            seq.num_cached_tokens = min(hit, seq.num_prompt_tokens)
        self._seq_hashes[seq.request_id] = list(hit_hashes)
        self._seqs[seq.request_id] = seq

    def _take_fresh(self) -> int:
        """A block for new KV: a blank one if any, else evict the least recently used cached one."""
        if self._blank:
            block_id = self._blank.popleft()
        else:
            block_id, _ = self._lru.popitem(last=False)
            block = self._blocks[block_id]
            del self._by_hash[block.block_hash]
            block.block_hash = None
        self._blocks[block_id].ref_count = 1
        return block_id

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly full, fully computed blocks in the prefix cache."""
        hashes = self._seq_hashes.get(seq.request_id)
        if hashes is None or not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        for i in range(len(hashes), num_full):
            parent = hashes[-1] if hashes else None
            block_hash = chain_hash(parent, _tokens(seq, i * bs, (i + 1) * bs))
            hashes.append(block_hash)
            block = self._blocks[seq.block_table[i]]
            # Another sequence may have computed the same block first; keep that one registered
            # and leave this copy unhashed (it returns to the blank queue when released).
            if block.block_hash is None and block_hash not in self._by_hash:
                block.block_hash = block_hash
                self._by_hash[block_hash] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks; registered ones stay cached until evicted."""
        # Tail first: the LRU queue then evicts a sequence's last blocks before its first ones,
        # and first blocks (system prompts, shared prefixes) are the ones most likely reused.
        for block_id in reversed(seq.block_table):
            block = self._blocks[block_id]
            assert block.ref_count > 0, (seq.request_id, block_id)
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.block_hash is not None:
                    self._lru[block_id] = None
                else:
                    self._blank.append(block_id)
        seq.block_table.clear()
        self._seq_hashes.pop(seq.request_id, None)
        self._seqs.pop(seq.request_id, None)

    def reset_prefix_cache(self) -> None:
        """Forget every cached-but-unused block (e.g. after loading new weights)."""
        while self._lru:
            block_id, _ = self._lru.popitem(last=False)
            block = self._blocks[block_id]
            del self._by_hash[block.block_hash]
            block.block_hash = None
            self._blank.append(block_id)

    # ---- invariants -------------------------------------------------------------------------

    def assert_consistent(self) -> None:
        """Check every internal invariant; raises AssertionError naming the first broken one."""
        refs = [0] * self.num_total_blocks
        for request_id, seq in self._seqs.items():
            assert seq.request_id == request_id and seq.block_table, request_id
            assert len(set(seq.block_table)) == len(seq.block_table), (request_id, "dup block")
            for block_id in seq.block_table:
                refs[block_id] += 1
            assert seq.num_computed_tokens <= len(seq.block_table) * self.block_size, request_id
        blank, lru = set(self._blank), set(self._lru)
        assert len(blank) == len(self._blank) and not blank & lru, "queues overlap"
        for block in self._blocks:
            bid = block.block_id
            assert block.ref_count == refs[bid], (
                f"block {bid}: ref {block.ref_count} != {refs[bid]}"
            )
            if block.ref_count == 0:
                assert (bid in lru) == (block.block_hash is not None), f"block {bid} misfiled"
                assert bid in lru or bid in blank, f"block {bid} leaked"
            else:
                assert bid not in lru and bid not in blank, f"block {bid} in use and free"
            if block.block_hash is not None:
                assert self._by_hash.get(block.block_hash) == bid, f"block {bid} hash stale"
        assert len(self._by_hash) == sum(b.block_hash is not None for b in self._blocks)
