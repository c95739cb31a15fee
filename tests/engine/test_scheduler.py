"""Scheduler: token budget, chunked prefill, mixed steps, priority, preemption, refusal, no leaks.

`step()` below plays the engine: schedule, pretend the runner computed the tokens, append one
sampled token to every sequence that caught up with its length, finish it at max_tokens.
"""

from __future__ import annotations

import itertools
import random

import pytest

from localseek.config import SchedulerConfig
from localseek.engine.block_manager import BlockManager
from localseek.engine.scheduler import Scheduler, SchedulerOutput
from localseek.engine.sequence import Sequence, SequenceStatus
from localseek.errors import ContextLengthError
from localseek.sampling_params import SamplingParams

_ids = itertools.count()


def make_scheduler(
    *,
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_seqs: int = 8,
    budget: int = 64,
    chunked: bool = True,
    prefix: bool = True,
    max_model_len: int = 1024,
) -> Scheduler:
    bm = BlockManager(num_blocks, block_size, prefix)
    config = SchedulerConfig(max_num_seqs, budget, chunked)
    return Scheduler(config, bm, max_model_len)


def make_seq(prompt: int | list[int], *, priority: int = 0, max_tokens: int = 16) -> Sequence:
    n = next(_ids)
    tokens = [1000 + n * 7 + i for i in range(prompt)] if isinstance(prompt, int) else prompt
    return Sequence(
        f"r{n}", list(tokens), SamplingParams(), priority=priority, max_tokens=max_tokens
    )


def step(sched: Scheduler, token: int = 1) -> SchedulerOutput:
    out = sched.schedule()
    sched.on_step_done(out)
    for item in out.scheduled:
        seq = item.seq
        if seq.num_computed_tokens == seq.num_tokens:
            seq.output_token_ids.append(token)
            if seq.num_output_tokens >= seq.max_tokens:
                sched.finish(seq, "length")
    sched.block_manager.assert_consistent()
    return out


def drain(sched: Scheduler, max_steps: int = 500) -> None:
    """Step until nothing is left; a step that does nothing while work remains is a stall."""
    for _ in range(max_steps):
        if not sched.has_unfinished():
            return
        out = step(sched)
        assert out.scheduled or out.finished, "scheduler stalled with work left"
    raise AssertionError(f"not drained after {max_steps} steps")


def plan(out: SchedulerOutput) -> list[tuple[Sequence, int]]:
    return [(item.seq, item.num_new_tokens) for item in out.scheduled]


def assert_pool_whole(sched: Scheduler) -> None:
    bm = sched.block_manager
    bm.assert_consistent()
    assert bm.num_free_blocks() == bm.num_total_blocks


# ---- admission and refusal ------------------------------------------------------------------


def test_prompt_as_long_as_the_context_is_refused_naming_both_numbers():
    sched = make_scheduler(max_model_len=32)
    with pytest.raises(ContextLengthError, match=r"32 tokens.*32 tokens"):
        sched.add(make_seq(32))
    assert not sched.has_unfinished() and sched.num_waiting == 0
    sched.add(make_seq(31))
    assert sched.num_waiting == 1


def test_prompt_that_cannot_fit_the_whole_pool_is_refused_naming_both_numbers():
    sched = make_scheduler(num_blocks=4, block_size=4)  # 16 token slots in all
    with pytest.raises(ContextLengthError, match=r"16 tokens.*16 tokens"):
        sched.add(make_seq(16))  # the prompt fits, but not prompt + one output token
    assert not sched.has_unfinished()
    assert_pool_whole(sched)
    sched.add(make_seq(15))
    assert plan(sched.schedule())[0][1] == 15


def test_empty_queue_schedules_nothing():
    out = make_scheduler().schedule()
    assert out.scheduled == [] and out.num_batched_tokens == 0


def test_waiting_sequences_are_admitted_by_priority_then_arrival():
    sched = make_scheduler(max_num_seqs=1)
    late_low = make_seq(3, priority=1, max_tokens=1)
    first_high = make_seq(3, priority=0, max_tokens=1)
    second_high = make_seq(3, priority=0, max_tokens=1)
    for seq in (late_low, first_high, second_high):
        sched.add(seq)
    order = [plan(step(sched))[0][0] for _ in range(3)]
    assert order == [first_high, second_high, late_low]
    assert not sched.has_unfinished()
    assert_pool_whole(sched)


def test_max_num_seqs_caps_the_running_set():
    sched = make_scheduler(max_num_seqs=2)
    seqs = [make_seq(3, max_tokens=2) for _ in range(4)]
    for seq in seqs:
        sched.add(seq)
    out = step(sched)
    assert [s for s, _ in plan(out)] == seqs[:2]
    assert sched.num_running == 2 and sched.num_waiting == 2
    out = step(sched)  # both finish after their second token
    assert sched.num_running == 0
    out = step(sched)
    assert [s for s, _ in plan(out)] == seqs[2:]


# ---- budget, chunking, mixing ---------------------------------------------------------------


def test_chunked_prefill_splits_a_long_prompt_across_steps_within_the_budget():
    sched = make_scheduler(budget=8)
    seq = make_seq(20)
    sched.add(seq)
    chunks = []
    for _ in range(3):
        out = step(sched)
        assert out.num_batched_tokens <= 8
        chunks.append(plan(out)[0][1])
        if len(chunks) < 3:
            assert seq.num_output_tokens == 0  # no logits until the prompt is complete
    assert chunks == [8, 8, 4]
    assert seq.num_output_tokens == 1


def test_decodes_and_prefill_share_one_step_running_first():
    sched = make_scheduler(budget=64)
    a, b = make_seq(5), make_seq(6)
    sched.add(a)
    assert plan(step(sched)) == [(a, 5)]
    sched.add(b)
    out = step(sched)
    assert plan(out) == [(a, 1), (b, 6)]
    assert out.num_batched_tokens == 7


def test_a_new_prompt_gets_the_budget_left_after_decodes_when_chunking():
    sched = make_scheduler(budget=10)
    a, b = make_seq(5), make_seq(9)
    sched.add(a)
    step(sched)
    sched.add(b)
    assert plan(step(sched)) == [(a, 1), (b, 9)]
    c = make_seq(20)
    sched.add(c)
    assert plan(step(sched)) == [(a, 1), (b, 1), (c, 8)]


def test_without_chunking_a_prompt_waits_for_a_step_with_room_for_all_of_it():
    sched = make_scheduler(budget=10, chunked=False)
    a, b = make_seq(5), make_seq(6)
    sched.add(a)
    sched.add(b)
    assert plan(step(sched)) == [(a, 5)]  # b needs 6, only 5 left: it waits whole
    assert plan(step(sched)) == [(a, 1), (b, 6)]


def test_without_chunking_a_prompt_longer_than_any_step_is_still_chunked():
    sched = make_scheduler(budget=8, chunked=False)
    seq = make_seq(20)
    sched.add(seq)
    assert [plan(step(sched))[0][1] for _ in range(3)] == [8, 8, 4]


def test_prefix_hit_is_skipped_and_reported():
    sched = make_scheduler(block_size=4)
    shared = list(range(500, 512))
    first = make_seq(shared + [1], max_tokens=1)
    sched.add(first)
    step(sched)
    assert first.is_finished and first.num_cached_tokens == 0
    second = make_seq(shared + [2, 3])
    sched.add(second)
    assert plan(step(sched)) == [(second, 2)]
    assert second.num_cached_tokens == 12
    assert sched.block_manager.prefix_hits == 12


# ---- preemption -----------------------------------------------------------------------------


def _three_decoding(prefix: bool = True) -> tuple[Scheduler, Sequence, Sequence, Sequence]:
    """4 blocks of 4; three 3-token prompts, one block each; a block boundary two tokens on."""
    sched = make_scheduler(num_blocks=4, block_size=4, prefix=prefix)
    high = make_seq(3, priority=0)
    low_early = make_seq(3, priority=1)
    low_late = make_seq(3, priority=1)
    for seq in (low_late, high, low_early):  # order of add is irrelevant; sort key decides
        sched.add(seq)
    step(sched)  # prefill: 3 blocks used, one token each sampled (4 tokens)
    step(sched)  # decode position 3: still one block each (5 tokens after sampling)
    return sched, high, low_early, low_late


def test_preemption_victim_is_lowest_priority_latest_arrival():
    sched, high, low_early, low_late = _three_decoding()
    out = step(sched)  # all need a second block; only one is free
    assert out.preempted == [low_late]
    assert plan(out) == [(high, 1), (low_early, 1)]
    assert low_late.status is SequenceStatus.WAITING
    assert low_late.num_computed_tokens == 0 and low_late.block_table == []
    assert low_late.num_preemptions == 1 and sched.num_preemptions_total == 1
    assert low_late.output_token_ids == [1, 1]  # kept; recomputed as context
    assert sched.waiting_sequences() == [low_late]
    assert_pool_whole_except(sched, [high, low_early])


def assert_pool_whole_except(sched: Scheduler, holders: list[Sequence]) -> None:
    bm = sched.block_manager
    bm.assert_consistent()
    held = {b for seq in holders for b in seq.block_table}
    assert bm.num_free_blocks() == bm.num_total_blocks - len(held)


def test_preempted_sequence_resumes_recomputing_prompt_and_outputs():
    sched, high, low_early, low_late = _three_decoding(prefix=False)
    step(sched)  # low_late preempted
    sched.finish(high, "stop")
    sched.finish(low_early, "stop")
    out = step(sched)
    assert plan(out) == [(low_late, 5)]  # 3 prompt + 2 output tokens, all recomputed
    assert low_late.num_output_tokens == 3
    sched.finish(low_late, "stop")
    assert not sched.has_unfinished()
    assert_pool_whole(sched)


def test_running_sequence_preempts_itself_when_better_ones_hold_the_pool():
    sched = make_scheduler(num_blocks=4, block_size=4)
    a = make_seq(6)  # 2 blocks; its decodes stay inside them for a while
    b = make_seq(8)  # 2 blocks; its first decode needs a third
    sched.add(a)
    sched.add(b)
    step(sched)
    out = step(sched)
    assert plan(out) == [(a, 1)]
    assert out.preempted == [b]
    assert b.status is SequenceStatus.WAITING and b.block_table == []


def test_no_admission_in_a_step_that_had_to_preempt():
    sched, high, low_early, low_late = _three_decoding()
    newcomer = make_seq(1, priority=0)
    sched.add(newcomer)
    out = step(sched)
    assert out.preempted == [low_late]
    assert newcomer not in [s for s, _ in plan(out)]


def test_waiting_sequence_of_strictly_higher_priority_preempts_a_running_one():
    sched = make_scheduler(num_blocks=3, block_size=4)
    low = make_seq(9, priority=5)
    sched.add(low)
    step(sched)  # low holds all three blocks
    same = make_seq(3, priority=5)
    sched.add(same)
    out = step(sched)
    assert plan(out) == [(low, 1)] and out.preempted == []  # equal priority: waits
    high = make_seq(3, priority=0)
    sched.add(high)
    out = step(sched)
    assert out.preempted == [low]
    assert plan(out) == [(high, 3)]  # low's decode was taken back out of this step
    assert low.num_preemptions == 1
    # Back in the queue in its place by sort key: it arrived before `same`.
    assert sched.waiting_sequences() == [low, same]


def test_sequence_that_outgrows_the_whole_pool_is_finished_with_length():
    sched = make_scheduler(num_blocks=2, block_size=4, max_model_len=100)
    seq = make_seq(7)
    sched.add(seq)
    step(sched)  # prefill 7 -> 8 tokens
    step(sched)  # decode at position 7: the last slot -> 9 tokens, which cannot fit
    out = step(sched)
    assert out.finished == [seq] and out.scheduled == []
    assert seq.is_finished and seq.finish_reason == "length"
    assert not sched.has_unfinished()
    assert_pool_whole(sched)


# ---- finish and abort -----------------------------------------------------------------------


def test_pool_is_whole_after_finish():
    sched = make_scheduler()
    seqs = [make_seq(9, max_tokens=3) for _ in range(3)]
    for seq in seqs:
        sched.add(seq)
    drain(sched)
    assert all(s.finish_reason == "length" and s.block_table == [] for s in seqs)
    assert_pool_whole(sched)


def test_abort_frees_a_waiting_a_mid_prefill_and_a_decoding_sequence():
    sched = make_scheduler(budget=8, max_num_seqs=2)
    decoding, prefilling, waiting = make_seq(3), make_seq(20), make_seq(4)
    for seq in (decoding, prefilling, waiting):
        sched.add(seq)
    step(sched)
    step(sched)
    assert prefilling.num_computed_tokens not in (0, prefilling.num_tokens)
    for seq in (waiting, prefilling, decoding):
        assert sched.abort(seq.request_id) is seq
        assert seq.is_finished and seq.finish_reason == "abort" and seq.block_table == []
        sched.block_manager.assert_consistent()
    assert sched.abort(decoding.request_id) is None
    assert sched.abort("no-such-request") is None
    assert not sched.has_unfinished()
    assert_pool_whole(sched)


def test_abort_between_schedule_and_step_done_leaks_nothing():
    sched = make_scheduler()
    seq = make_seq(9)
    sched.add(seq)
    out = sched.schedule()
    sched.abort(seq.request_id)
    sched.on_step_done(out)
    assert seq.num_computed_tokens == 0
    assert_pool_whole(sched)


def test_pool_is_whole_after_preempted_sequences_finish():
    sched, high, low_early, low_late = _three_decoding()
    drain(sched)
    assert low_late.num_preemptions >= 1
    assert_pool_whole(sched)


# ---- randomized property test ---------------------------------------------------------------


def _check_step(sched: Scheduler, out: SchedulerOutput) -> None:
    """Invariants of one schedule() result, checked before the step is 'run'."""
    cfg, bm = sched.config, sched.block_manager
    seqs = [item.seq for item in out.scheduled]
    assert len({s.request_id for s in seqs}) == len(seqs), "a sequence scheduled twice"
    assert out.num_batched_tokens == sum(i.num_new_tokens for i in out.scheduled)
    assert out.num_batched_tokens <= cfg.max_num_batched_tokens
    assert sched.num_running <= cfg.max_num_seqs
    for item in out.scheduled:
        seq, end = item.seq, item.seq.num_computed_tokens + item.num_new_tokens
        assert seq.status is SequenceStatus.RUNNING and item.num_new_tokens > 0
        assert end <= seq.num_tokens
        assert len(seq.block_table) * bm.block_size >= end, "KV slots missing"
    for seq in out.preempted + sched.waiting_sequences():
        assert seq.status is SequenceStatus.WAITING
        assert seq.block_table == [] and seq.num_computed_tokens == 0
    for seq in out.finished:
        assert seq.is_finished and seq.block_table == [] and seq.finish_reason == "length"
    bm.assert_consistent()


def _random_prompt(rng: random.Random, bases: list[list[int]]) -> list[int]:
    # Shared bases make prefix hits (and shared, ref-counted blocks) common.
    base = rng.choice(bases)[: rng.randint(0, 20)]
    return base + [rng.randrange(50) for _ in range(rng.randint(1, 12))]


def _engine_step(sched: Scheduler, rng: random.Random) -> SchedulerOutput:
    out = sched.schedule()
    _check_step(sched, out)
    if out.scheduled and rng.random() < 0.05:  # an abort racing the step
        sched.abort(rng.choice(out.scheduled).seq.request_id)
    sched.on_step_done(out)
    for item in out.scheduled:
        seq = item.seq
        if seq.status is SequenceStatus.RUNNING and seq.num_computed_tokens == seq.num_tokens:
            seq.output_token_ids.append(rng.randrange(50))
            if seq.num_output_tokens >= seq.max_tokens or seq.num_tokens >= sched.max_model_len:
                sched.finish(seq, "length")
    sched.block_manager.assert_consistent()
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_workloads_keep_every_invariant_and_always_drain(seed):
    rng = random.Random(seed)
    sched = make_scheduler(
        num_blocks=rng.randint(3, 40),
        block_size=rng.choice([1, 2, 4, 8]),
        max_num_seqs=rng.randint(1, 6),
        budget=rng.randint(1, 32),
        chunked=rng.random() < 0.7,
        prefix=rng.random() < 0.7,
        max_model_len=48,
    )
    bm = sched.block_manager
    bases = [[rng.randrange(50) for _ in range(20)] for _ in range(3)]
    live: list[str] = []
    for _ in range(150):
        action = rng.random()
        if action < 0.3:
            seq = make_seq(
                _random_prompt(rng, bases),
                priority=rng.randint(0, 2),
                max_tokens=rng.randint(1, 10),
            )
            too_long = seq.num_prompt_tokens >= 48 or not bm.can_ever_fit(seq.num_prompt_tokens + 1)
            try:
                sched.add(seq)
                live.append(seq.request_id)
            except ContextLengthError:
                assert too_long
                assert sched.get(seq.request_id) is None
            else:
                assert not too_long
        elif action < 0.35 and live:
            sched.abort(rng.choice(live))
        else:
            _engine_step(sched, rng)
    for _ in range(3000):  # drain: every step must make progress until nothing is left
        if not sched.has_unfinished():
            break
        out = _engine_step(sched, rng)
        assert out.scheduled or out.finished, "scheduler stalled with work left"
    assert not sched.has_unfinished()
    assert sched.num_running == sched.num_waiting == 0
    assert_pool_whole(sched)
