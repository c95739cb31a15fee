"""BlockManager with sliding-window groups: blocks that fall out of the window go back to the pool.

Layout under test: group 0 full attention, group 1 a window of 8 tokens, blocks of 4 tokens.
A query at position p sees keys p-7 .. p, so the window group needs at most the blocks holding
[p - 7, p + step) while the full group keeps every block.
"""

from __future__ import annotations

import itertools

import pytest

from localseek.engine.block_manager import NULL_BLOCK, BlockManager
from localseek.engine.sequence import Sequence
from localseek.sampling_params import SamplingParams

_ids = itertools.count()
WINDOW, BS = 8, 4


def make_seq(tokens: list[int]) -> Sequence:
    return Sequence(f"w{next(_ids)}", list(tokens), SamplingParams())


def manager(num_blocks: int = 64, caching: bool = True, step: int | None = 16) -> BlockManager:
    return BlockManager(num_blocks, BS, caching, windows=(None, WINDOW), max_step_tokens=step)


def compute(bm: BlockManager, seq: Sequence, num_new: int) -> None:
    """One scheduled step: allocate, 'run' it, commit; invariants checked after each."""
    assert bm.allocate(seq, num_new)
    seq.num_computed_tokens += num_new
    bm.commit(seq)
    bm.assert_consistent()


def decode(bm: BlockManager, seq: Sequence, steps: int) -> None:
    for i in range(steps):
        seq.output_token_ids.append(1000 + i)
        compute(bm, seq, 1)


def live(table: list[int]) -> int:
    return sum(b != NULL_BLOCK for b in table)


def test_block_zero_is_reserved_as_the_null_block():
    bm = manager(num_blocks=9)
    assert bm.num_total_blocks == 8 and bm.is_null(NULL_BLOCK)
    seq = make_seq(range(16))
    compute(bm, seq, 16)  # 4 blocks per group: all 8 usable ones
    assert NULL_BLOCK not in seq.block_tables[0] + seq.block_tables[1]
    assert bm.num_free_blocks() == 0


def test_window_group_keeps_only_the_blocks_its_queries_can_see():
    bm = manager()
    seq = make_seq(range(10))
    compute(bm, seq, 10)
    decode(bm, seq, 50)  # context 60: 15 blocks
    full, window = seq.block_tables
    assert len(full) == len(window) == 15 and live(full) == 15
    # The next query sits at 60 and sees 53..60: blocks 13 and up; the step's new block is 15.
    assert window[:13] == [NULL_BLOCK] * 13 and live(window) == 2
    assert bm.num_free_blocks() == bm.num_total_blocks - 17
    bm.free(seq)
    bm.assert_consistent()
    assert bm.num_free_blocks() == bm.num_total_blocks


def test_a_long_context_fits_a_pool_too_small_to_keep_every_window_block():
    # 200 tokens: the full group needs 50 blocks, the window group at most 6 at once;
    # keeping everything would need 100.
    bm = manager(num_blocks=60)
    seq = make_seq(range(5))
    assert bm.can_ever_fit(200) and not manager(num_blocks=60, step=None).can_ever_fit(200)
    compute(bm, seq, 5)
    decode(bm, seq, 195)
    assert live(seq.block_tables[0]) == 50 and live(seq.block_tables[1]) <= 6


def test_chunked_prompt_releases_window_blocks_between_chunks():
    bm = manager()
    seq = make_seq(range(64))
    peak = 0
    for _ in range(4):
        compute(bm, seq, 16)
        peak = max(peak, live(seq.block_tables[1]))
    # Each chunk holds its own 4 blocks plus the 2 blocks of the 7 keys before it.
    assert peak <= 6
    assert live(seq.block_tables[1]) == 6  # released lazily, when the next step allocates
    decode(bm, seq, 1)  # query at 64 sees 57..64: blocks 14, 15 and the new block 16
    assert live(seq.block_tables[1]) == 3


def test_prefix_hit_needs_full_blocks_everywhere_but_only_the_window_in_window_groups():
    bm = manager()
    prompt = list(range(100, 140))  # 10 blocks
    first = make_seq(prompt + [1])
    compute(bm, first, 41)
    decode(bm, first, 3)  # releases the window blocks out of reach (they stay cached)
    bm.free(first)
    second = make_seq(prompt + [2, 3])
    assert bm.lookup_prefix(second) == 40
    assert bm.allocate(second, 2)
    full, window = second.block_tables
    # Hit of 40 tokens: the first query (position 40) sees 33..40 -> window blocks 8, 9 taken.
    assert live(full) == 11 and window[:8] == [NULL_BLOCK] * 8 and live(window) == 3
    bm.assert_consistent()


def test_evicted_early_window_blocks_do_not_prevent_a_hit_on_the_recent_ones():
    bm = manager(num_blocks=25)  # 24 usable
    prompt = list(range(100, 140))
    first = make_seq(prompt + [1])
    compute(bm, first, 41)  # 11 full + 11 window blocks
    decode(bm, first, 1)  # window blocks 0..7 released to the LRU queue
    bm.free(first)
    # Another sequence takes 2 fresh blocks per group: 2 of the cached blocks are evicted,
    # the least recently released first: early window blocks, released before the free.
    other = make_seq(list(range(500, 508)))
    compute(bm, other, 8)
    second = make_seq(prompt + [2])
    assert bm.lookup_prefix(second) == 40
    bm.free(other)
    bm.assert_consistent()


def evict(bm: BlockManager, block_id: int) -> None:
    """Evict one cached block (LRU order never picks a window's newest blocks before the full
    group's, so the test reaches into the manager to set this state up)."""
    block = bm._blocks[block_id]
    del bm._by_key[block.key], bm._lru[block_id]
    block.key = None
    bm._blank.append(block_id)


def test_missing_recent_window_blocks_shorten_the_hit():
    bm = manager(num_blocks=64, caching=True)
    prompt = list(range(200, 240))
    first = make_seq(prompt + [1])
    compute(bm, first, 41)
    window_blocks = list(first.block_tables[1])
    bm.free(first)
    for block_id in window_blocks[8:10]:  # the blocks a query at 40 needs
        evict(bm, block_id)
    bm.assert_consistent()
    # The longest hit whose window is whole: 32 tokens (a query at 32 sees blocks 6 and 7).
    assert bm.lookup_prefix(make_seq(prompt + [2])) == 32


def test_refusal_takes_nothing_and_null_entries_are_never_released_twice():
    bm = manager(num_blocks=15)  # 14 usable
    seq = make_seq(range(30))
    compute(bm, seq, 16)  # 4 + 4 blocks
    other = make_seq(range(300, 330))
    free_before = bm.num_free_blocks()
    assert not bm.allocate(other, 16)  # needs 8, 6 free
    assert bm.num_free_blocks() == free_before and other.block_tables == [[]]
    compute(bm, seq, 14)  # 4 + 4 more, after the window gave back 2: exactly the 8 free
    assert bm.num_free_blocks() == 0
    bm.free(seq)
    bm.free(seq)  # a second free finds nothing to release
    bm.assert_consistent()
    assert bm.num_free_blocks() == bm.num_total_blocks


@pytest.mark.parametrize("caching", [True, False])
def test_random_workload_keeps_every_invariant(caching):
    import random

    rng = random.Random(7)
    bm = manager(num_blocks=48, caching=caching)
    running: list[Sequence] = []
    for _ in range(300):
        if len(running) < 4 and rng.random() < 0.3:
            base = rng.choice([list(range(50)), list(range(60, 90)), []])
            seq = make_seq(base[: rng.randint(0, len(base))] + [rng.randint(1, 9)])
            if bm.allocate(seq, seq.num_tokens - bm.lookup_prefix(seq)):
                seq.num_computed_tokens = seq.num_tokens
                bm.commit(seq)
                running.append(seq)
        elif running:
            seq = rng.choice(running)
            seq.output_token_ids.append(rng.randint(1, 9))
            if rng.random() < 0.1 or not bm.allocate(seq, 1):
                bm.free(seq)
                running.remove(seq)
            else:
                seq.num_computed_tokens += 1
                bm.commit(seq)
        bm.assert_consistent()
    for seq in running:
        bm.free(seq)
    bm.assert_consistent()
    assert bm.num_free_blocks() == bm.num_total_blocks
