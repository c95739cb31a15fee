"""BlockManager: paged blocks, hash-chained prefix cache, ref counts, LRU eviction, no leaks."""

from __future__ import annotations

import itertools

from localseek.engine.block_manager import BlockManager, chain_hash
from localseek.engine.sequence import Sequence
from localseek.sampling_params import SamplingParams

_ids = itertools.count()


def make_seq(tokens: list[int], outputs: list[int] | None = None) -> Sequence:
    seq = Sequence(f"r{next(_ids)}", list(tokens), SamplingParams())
    seq.output_token_ids = list(outputs or [])
    return seq


def run_prefill(bm: BlockManager, seq: Sequence) -> None:
    """Allocate and 'compute' every token of the sequence, then register full blocks."""
    remaining = seq.num_tokens - bm.lookup_prefix(seq)
    assert bm.allocate(seq, remaining)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)
    bm.assert_consistent()


def assert_whole(bm: BlockManager) -> None:
    bm.assert_consistent()
    assert bm.num_free_blocks() == bm.num_total_blocks
    assert bm.usage() == 0.0


def test_allocation_covers_computed_plus_new_tokens_and_free_returns_every_block():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    seq = make_seq(list(range(10)))
    assert bm.allocate(seq, 6)
    assert len(seq.block_table) == 2  # 6 slots -> 2 blocks of 4
    seq.num_computed_tokens = 6
    assert bm.allocate(seq, 4)
    assert len(seq.block_table) == 3  # 10 slots -> 3 blocks
    assert bm.num_free_blocks() == 5
    assert bm.usage() == 3 / 8
    bm.assert_consistent()
    bm.free(seq)
    assert seq.block_table == []
    assert_whole(bm)


def test_same_prefix_reuses_the_same_blocks_without_recomputation():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    shared = list(range(100, 112))  # 3 full blocks
    first = make_seq(shared + [1, 2])
    run_prefill(bm, first)
    first_blocks = list(first.block_table)
    bm.free(first)

    second = make_seq(shared + [7, 8, 9])
    assert bm.lookup_prefix(second) == 12
    assert bm.allocate(second, second.num_tokens - 12)
    assert second.block_table[:3] == first_blocks[:3]
    assert second.num_computed_tokens == 12  # the hit is already computed
    assert second.num_cached_tokens == 12
    bm.assert_consistent()


def test_hash_is_chained_a_different_earlier_token_changes_later_hashes():
    block_a, block_b = [1, 2, 3, 4], [5, 6, 7, 8]
    assert chain_hash(chain_hash(None, block_a), block_b) != chain_hash(
        chain_hash(None, [9, 2, 3, 4]), block_b
    )
    assert chain_hash(None, block_b) != chain_hash(chain_hash(None, block_a), block_b)

    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    run_prefill(bm, make_seq(block_a + block_b + [0]))
    # Second block's own tokens match, but the first differs: nothing is reusable.
    assert bm.lookup_prefix(make_seq([9, 2, 3, 4] + block_b + [0])) == 0
    # Only the second block differs: the first is still a hit.
    assert bm.lookup_prefix(make_seq(block_a + [5, 6, 7, 0] + [0])) == 4
    assert bm.lookup_prefix(make_seq(block_a + block_b + [0])) == 8


def test_prefix_hit_never_covers_the_whole_prompt():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    prompt = list(range(8))  # exactly 2 full blocks
    run_prefill(bm, make_seq(prompt + [50]))
    same = make_seq(prompt)
    # The last token's logits are needed, so its block is recomputed: hit is 4, not 8.
    assert bm.lookup_prefix(same) == 4
    assert bm.allocate(same, 4)
    assert same.num_computed_tokens == 4
    assert bm.lookup_prefix(make_seq(prompt + [1])) == 8


def test_only_computed_full_blocks_are_registered():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    seq = make_seq(list(range(12)))
    assert bm.allocate(seq, 12)  # slots reserved for all 12 tokens...
    seq.num_computed_tokens = 6  # ...but only 6 computed: one full block
    bm.commit(seq)
    assert bm.lookup_prefix(make_seq(list(range(12)) + [99])) == 4
    seq.num_computed_tokens = 12
    bm.commit(seq)
    assert bm.lookup_prefix(make_seq(list(range(12)) + [99])) == 12
    bm.free(seq)
    assert_whole(bm)


def test_shared_prefix_blocks_are_ref_counted():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    shared = list(range(8))
    a = make_seq(shared + [1, 2])
    run_prefill(bm, a)
    b = make_seq(shared + [3])
    run_prefill(bm, b)
    assert b.block_table[:2] == a.block_table[:2]
    assert [bm.ref_count(x) for x in a.block_table] == [2, 2, 1]
    used = bm.num_total_blocks - bm.num_free_blocks()
    assert used == 4  # 2 shared + 1 tail each
    bm.free(a)
    assert [bm.ref_count(x) for x in b.block_table] == [1, 1, 1]
    assert bm.num_free_blocks() == bm.num_total_blocks - 3
    bm.free(b)
    assert_whole(bm)
    assert bm.num_cached_blocks() == 2  # the shared full blocks stay reusable


def test_lru_evicts_blank_blocks_first_then_oldest_released_and_a_tail_before_its_head():
    bm = BlockManager(num_blocks=6, block_size=4, enable_prefix_caching=True)
    a = make_seq([1] * 4 + [2] * 4 + [9])  # 2 full blocks (registered) + a partial tail
    b = make_seq([3] * 4 + [4] * 4 + [9])
    run_prefill(bm, a)
    run_prefill(bm, b)
    bm.free(a)  # released first, so evicted first
    bm.free(b)
    assert_whole(bm)
    assert bm.num_cached_blocks() == 4

    def take_one_block() -> None:
        assert bm.allocate(make_seq([0] * 4), 4)
        bm.assert_consistent()

    take_one_block()
    take_one_block()  # the two blank tails go before any cached block
    assert (bm.lookup_prefix(a), bm.lookup_prefix(b)) == (8, 8)
    take_one_block()  # evicts a's second block: a was released first, tail first
    assert (bm.lookup_prefix(a), bm.lookup_prefix(b)) == (4, 8)
    take_one_block()
    assert (bm.lookup_prefix(a), bm.lookup_prefix(b)) == (0, 8)
    take_one_block()
    assert (bm.lookup_prefix(a), bm.lookup_prefix(b)) == (0, 4)


def test_a_cache_hit_refreshes_the_block_in_the_lru_order():
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=True)
    a, b = make_seq([1] * 4 + [0]), make_seq([2] * 4 + [0])
    run_prefill(bm, a)
    run_prefill(bm, b)
    bm.free(a)
    bm.free(b)  # cached, oldest first: a's block, b's block
    again = make_seq([1] * 4 + [5])
    run_prefill(bm, again)  # hits a's block
    bm.free(again)  # a's block is now the most recently released
    filler = make_seq(list(range(30, 42)))
    assert bm.allocate(filler, 12)  # 3 blocks: both blank ones, then the oldest cached
    assert bm.lookup_prefix(b) == 0
    assert bm.lookup_prefix(a) == 4
    bm.free(filler)
    assert_whole(bm)


def test_allocate_that_cannot_be_satisfied_changes_nothing():
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=True)
    cached = make_seq(list(range(8)) + [1])
    run_prefill(bm, cached)
    bm.free(cached)
    holder = make_seq(list(range(100, 108)))
    assert bm.allocate(holder, 8)  # 2 blocks: the blank tail block, then one evicted
    queries, hits = bm.prefix_queries, bm.prefix_hits

    big = make_seq(list(range(8)) + list(range(50, 60)))  # hits 2 cached blocks, needs 5
    assert bm.allocate(big, big.num_tokens - bm.lookup_prefix(big)) is False
    assert big.block_table == [] and big.num_computed_tokens == 0
    assert (bm.prefix_queries, bm.prefix_hits) == (queries, hits)
    bm.assert_consistent()
    bm.free(holder)
    assert_whole(bm)


def test_concurrent_identical_prefixes_register_one_copy_and_leak_nothing():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    a, b = make_seq(list(range(9))), make_seq(list(range(9)))
    assert bm.allocate(a, 9) and bm.allocate(b, 9)  # both miss: nothing cached yet
    for seq in (a, b):
        seq.num_computed_tokens = 9
        bm.commit(seq)
        bm.assert_consistent()
    assert set(a.block_table).isdisjoint(b.block_table)
    bm.free(a)
    bm.free(b)
    assert_whole(bm)
    assert bm.num_cached_blocks() == 2  # a's copies; b's duplicates went back to blank
    assert bm.lookup_prefix(make_seq(list(range(9)))) == 8


def test_preempted_sequence_finds_its_own_output_tokens_in_the_cache():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    seq = make_seq([1, 2, 3, 4, 5, 6], outputs=[7, 8, 9, 10, 11])
    run_prefill(bm, seq)
    bm.free(seq)
    seq.num_computed_tokens = 0
    seq.num_preemptions = 1
    assert bm.lookup_prefix(seq) == 8  # 11 tokens: two full blocks, output tokens included
    # Content decides, not where the prompt ended: the same 11 tokens as a prompt hit too.
    assert bm.lookup_prefix(make_seq(list(range(1, 12)))) == 8
    assert bm.allocate(seq, 3)
    assert seq.num_computed_tokens == 8
    assert seq.num_cached_tokens == 0  # the client-facing count is from the first schedule
    bm.free(seq)
    assert_whole(bm)


def test_prefix_caching_disabled_never_hits_and_frees_to_blank():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    run_prefill(bm, a := make_seq(list(range(9))))
    bm.free(a)
    assert_whole(bm)
    assert bm.num_cached_blocks() == 0
    assert bm.lookup_prefix(make_seq(list(range(9)))) == 0


def test_prefix_counters_count_looked_up_and_reused_tokens():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    run_prefill(bm, a := make_seq(list(range(9))))
    run_prefill(bm, b := make_seq(list(range(10))))
    assert bm.prefix_queries == 9 + 10
    assert bm.prefix_hits == 8
    bm.free(a)
    bm.free(b)
    assert_whole(bm)


def test_can_ever_fit_is_about_the_whole_pool():
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=True)
    assert bm.can_ever_fit(16)
    assert not bm.can_ever_fit(17)
    assert bm.capacity_tokens == 16


def test_reset_prefix_cache_forgets_unused_cached_blocks_only():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    run_prefill(bm, kept := make_seq(list(range(9))))
    run_prefill(bm, dropped := make_seq(list(range(50, 59))))
    bm.free(dropped)
    bm.reset_prefix_cache()
    bm.assert_consistent()
    assert bm.lookup_prefix(make_seq(list(range(50, 59)))) == 0
    assert bm.lookup_prefix(make_seq(list(range(9)))) == 8  # still held by a live sequence
    bm.free(kept)
    assert_whole(bm)
