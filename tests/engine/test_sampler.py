"""Sampler: masks, penalties and distributions as specified; seeded tokens independent of batch."""

from __future__ import annotations

import math

import pytest
import torch

from localseek.engine.sampler import (
    Sampler,
    mask_top_k_top_p_min_p,
    row_argmax,
    seed_for_position,
)
from localseek.engine.sequence import Sequence
from localseek.errors import InvalidRequestError
from localseek.sampling_params import SamplingParams

VOCAB = 32
EOS = 2


def make_seq(prompt=(5, 6, 7), output=(), eos=(EOS,), **params) -> Sequence:
    seq = Sequence("r", list(prompt), SamplingParams(**params), eos_token_ids=frozenset(eos))
    seq.output_token_ids = list(output)
    return seq


def random_logits(rows: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * 3


# ---- greedy ---------------------------------------------------------------------------------


def test_greedy_is_argmax_and_ties_pick_lowest_id():
    logits = random_logits(4)
    logits[3] = 0.0
    logits[3, [9, 4, 20]] = 5.0  # a three-way tie
    seqs = [make_seq(temperature=0.0) for _ in range(4)]
    out = Sampler()(logits, seqs)
    assert out.token_ids[:3] == logits[:3].argmax(dim=-1).tolist()
    assert out.token_ids[3] == 4
    assert out.logprobs == [None] * 4


@pytest.mark.parametrize("vocab", [262_144, 151_936, 40_000, 300])
def test_row_argmax_is_torch_argmax_on_large_and_ragged_vocabularies(vocab):
    """The two-level argmax (blocks of 512) returns torch.argmax's index, first on ties."""
    rows = random_logits(5, seed=vocab, vocab=vocab)
    rows[1] = 0.0  # all tied: index 0
    rows[2, -1] = 100.0  # the max in the ragged last block
    rows[3, [7, vocab - 3]] = 100.0  # tied maxima in different blocks: the first
    rows[4] = float("-inf")
    rows[4, vocab // 2] = -1.0
    assert torch.equal(row_argmax(rows), rows.argmax(dim=-1))
    assert row_argmax(rows).tolist()[1:4] == [0, vocab - 1, 7]


def test_tiny_temperature_is_greedy_not_nan():
    logits = random_logits(1)
    out = Sampler()(logits, [make_seq(temperature=1e-7)])
    assert out.token_ids == [int(logits.argmax())]


# ---- masks: exactly the expected tokens, and equal to transformers' warpers -----------------


def test_top_k_keeps_exactly_k_largest_and_ties():
    logits = torch.tensor([[1.0, 4.0, 3.0, 3.0, 0.5, 2.0]])
    kept = mask_top_k_top_p_min_p(logits, [SamplingParams(top_k=3)]).isfinite()
    assert kept[0].tolist() == [False, True, True, True, False, False]
    kept = mask_top_k_top_p_min_p(logits, [SamplingParams(top_k=2)]).isfinite()
    assert kept[0].tolist() == [False, True, True, True, False, False]  # tie with the 2nd kept


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.4, 0.3, 0.15, 0.1]])
    logits = probs.log()
    # Mass above each token in descending order: 0.4:0, 0.3:0.4, 0.15:0.7, 0.1:0.85, 0.05:0.95.
    expected = {
        0.3: [False, True, False, False, False],
        0.5: [False, True, True, False, False],
        0.75: [False, True, True, True, False],
        0.9: [False, True, True, True, True],
    }
    for top_p, keep in expected.items():
        kept = mask_top_k_top_p_min_p(logits, [SamplingParams(top_p=top_p)]).isfinite()
        assert kept[0].tolist() == keep, top_p


def test_min_p_drops_tokens_below_fraction_of_top():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    kept = mask_top_k_top_p_min_p(probs.log(), [SamplingParams(min_p=0.3)]).isfinite()
    assert kept[0].tolist() == [True, True, True, False, False]  # threshold 0.15


PARAM_GRID = [
    SamplingParams(top_k=5),
    SamplingParams(top_p=0.8),
    SamplingParams(min_p=0.1),
    SamplingParams(temperature=0.7, top_k=10, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=1.5, top_p=0.5),
    SamplingParams(),
]


def test_masks_match_transformers_warpers():
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = random_logits(len(PARAM_GRID), seed=3)
    temps = torch.tensor([p.temperature for p in PARAM_GRID]).unsqueeze(1)
    ours = mask_top_k_top_p_min_p(logits / temps, PARAM_GRID)  # all rows in one batch
    for row, p in enumerate(PARAM_GRID):
        ref = logits[row : row + 1]
        ref = TemperatureLogitsWarper(p.temperature)(None, ref)
        if p.top_k:
            ref = TopKLogitsWarper(p.top_k)(None, ref)
        if p.top_p < 1.0:
            ref = TopPLogitsWarper(p.top_p)(None, ref)
        if p.min_p:
            ref = MinPLogitsWarper(p.min_p)(None, ref)
        assert ours[row].isfinite().tolist() == ref[0].isfinite().tolist(), p
        assert torch.equal(ours[row][ours[row].isfinite()], ref[0][ref[0].isfinite()])


def test_disabled_filters_leave_rows_bit_exact():
    logits = random_logits(3, seed=9)
    params = [SamplingParams(), SamplingParams(top_k=3, top_p=0.5, min_p=0.2), SamplingParams()]
    out = mask_top_k_top_p_min_p(logits, params)
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])


# ---- distributions --------------------------------------------------------------------------


def empirical(logits_row: torch.Tensor, params: SamplingParams, n: int = 6000) -> torch.Tensor:
    torch.manual_seed(0)
    seqs = [make_seq(**params_dict(params)) for _ in range(n)]
    out = Sampler()(logits_row.expand(n, -1).contiguous(), seqs)
    return torch.bincount(torch.tensor(out.token_ids), minlength=logits_row.shape[0]) / n


def params_dict(p: SamplingParams) -> dict:
    return {k: getattr(p, k) for k in ("temperature", "top_k", "top_p", "min_p", "seed")}


@pytest.mark.parametrize(
    "params",
    [SamplingParams(), SamplingParams(temperature=0.5), SamplingParams(top_k=3, temperature=2.0)],
)
def test_sampling_frequencies_follow_processed_distribution(params):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 1.5])
    freq = empirical(logits, params)
    masked = mask_top_k_top_p_min_p((logits / params.temperature).unsqueeze(0), [params])[0]
    expected = torch.softmax(masked, dim=-1)
    assert torch.all(freq[expected == 0] == 0)  # masked tokens are never drawn
    # 6000 draws: 4 standard deviations of a binomial proportion is below 0.026.
    assert torch.allclose(freq, expected, atol=0.026), (freq, expected)


def test_a_large_vocabularys_tail_keeps_its_share():
    """65,536 tokens: three hold 0.2 / 0.3 / 0.1 and the other 65,533 share 0.4 evenly; the
    draws follow that, the thin tail included (one uniform per row through the cumulative
    sums)."""
    vocab, rows, calls = 65536, 250, 16
    probs = torch.full((vocab,), 0.4 / (vocab - 3))
    probs[[10, 30000, vocab - 1]] = torch.tensor([0.2, 0.3, 0.1])
    logits = probs.log().expand(rows, vocab).contiguous()
    sampler = Sampler()
    drawn = torch.cat(
        [
            torch.tensor(sampler(logits, [make_seq() for _ in range(rows)]).token_ids)
            for _ in range(calls)
        ]
    )
    n = rows * calls
    freq = {t: (drawn == t).sum().item() / n for t in (10, 30000, vocab - 1)}
    tail = 1 - sum(freq.values())
    # 4000 draws: 4 standard deviations of a proportion near 0.5 is below 0.032.
    assert abs(freq[10] - 0.2) < 0.032 and abs(freq[30000] - 0.3) < 0.032
    assert abs(freq[vocab - 1] - 0.1) < 0.032 and abs(tail - 0.4) < 0.032
    assert len(set(drawn.tolist())) > 0.3 * n  # the tail is spread, not one token


# ---- penalties ------------------------------------------------------------------------------


def test_repetition_penalty_matches_hand_computation_and_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0]])
    seq = make_seq(prompt=[0, 1], output=[1, 3], temperature=0.0, repetition_penalty=2.0)
    processed = Sampler()._process(logits, [seq])
    assert processed[0].tolist() == [1.0, -2.0, 0.5, -6.0, 1.0, 0.0]
    ref = RepetitionPenaltyLogitsProcessor(2.0)(torch.tensor([[0, 1, 1, 3]]), logits.clone())
    assert torch.equal(processed, ref)
    assert torch.equal(logits, torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0]]))  # not in place


def test_presence_and_frequency_penalties_count_output_only():
    logits = torch.zeros(1, 6)
    seq = make_seq(
        prompt=[5, 5, 5], output=[1, 1, 1, 4], presence_penalty=0.5, frequency_penalty=0.25
    )
    processed = Sampler()._process(logits, [seq])
    # token 1: 3 * 0.25 + 0.5; token 4: 0.25 + 0.5; prompt token 5 untouched.
    assert processed[0].tolist() == [0.0, -1.25, 0.0, 0.0, -0.75, 0.0]


def test_penalty_changes_greedy_choice():
    logits = torch.tensor([[3.0, 2.9, 0.0, 0.0]])
    plain = Sampler()(logits, [make_seq(output=[0], temperature=0.0)])
    penalized = Sampler()(logits, [make_seq(output=[0], temperature=0.0, frequency_penalty=1.0)])
    assert plain.token_ids == [0] and penalized.token_ids == [1]


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    logits = torch.zeros(1, 8)
    logits[0, EOS] = 10.0
    logits[0, 6] = 9.0
    logits[0, 3] = 8.0
    early = make_seq(output=[4], temperature=0.0, min_tokens=3, stop_token_ids=[6])
    assert Sampler()(logits, [early]).token_ids == [3]
    done = make_seq(output=[4, 4, 4], temperature=0.0, min_tokens=3, stop_token_ids=[6])
    assert Sampler()(logits, [done]).token_ids == [EOS]
    ignore = make_seq(output=[4], temperature=0.0, min_tokens=3, ignore_eos=True)
    assert Sampler()(logits, [ignore]).token_ids == [EOS]  # eos is not a stop here


# ---- seeds ----------------------------------------------------------------------------------


def test_seeded_token_independent_of_batch_composition():
    target_logits = random_logits(1, seed=42)[0]
    others = random_logits(6, seed=7)

    def target(position: int) -> Sequence:
        return make_seq(output=[1] * position, seed=1234, temperature=0.9, top_p=0.95)

    def filler(i: int) -> Sequence:
        variants = [
            {},
            {"seed": 5},
            {"temperature": 0.0},
            {"top_k": 3, "min_p": 0.1},
            {"repetition_penalty": 1.3, "presence_penalty": 1.0},
            {"seed": 1234, "logprobs": 3},
        ]
        return make_seq(output=[3, 4], **variants[i % len(variants)])

    sampler = Sampler()
    for position in range(8):
        alone = sampler(target_logits.unsqueeze(0), [target(position)]).token_ids[0]
        for size, at in [(2, 0), (4, 3), (7, 2), (7, 6)]:
            rows = [filler(i) for i in range(size - 1)]
            rows.insert(at, target(position))
            logits = torch.cat([others[:at], target_logits.unsqueeze(0), others[at : size - 1]])
            torch.manual_seed(position * 10 + size)  # the unseeded rows' draws differ per batch
            assert sampler(logits, rows).token_ids[at] == alone, (position, size, at)


def test_seed_and_position_decide_the_draw():
    logits = torch.zeros(1, 1000)  # uniform: any change of random stream changes the token
    sampler = Sampler()

    def draw(seed: int, position: int) -> int:
        return sampler(logits, [make_seq(output=[0] * position, seed=seed)]).token_ids[0]

    assert draw(7, 3) == draw(7, 3)
    assert len({draw(7, p) for p in range(10)}) > 5  # positions are not all the same draw
    assert len({draw(s, 3) for s in range(10)}) > 5
    assert seed_for_position(7, 3) != seed_for_position(3, 7)
    assert 0 <= seed_for_position(2**70, 10**6) < 2**63


# ---- logprobs -------------------------------------------------------------------------------


def test_logprobs_are_raw_top_n_plus_chosen():
    logits = random_logits(3, seed=11)
    seqs = [
        make_seq(temperature=0.0, logprobs=3, repetition_penalty=1.5, output=[0, 1]),
        make_seq(temperature=0.0),
        make_seq(temperature=1.0, top_k=2, logprobs=0, seed=1),
    ]
    out = Sampler()(logits, seqs)
    raw = torch.log_softmax(logits, dim=-1)
    first = out.logprobs[0]
    top3 = raw[0].topk(3).indices.tolist()
    assert set(top3) <= set(first) and out.token_ids[0] in first
    assert len(first) in (3, 4)
    for token, lp in first.items():
        assert math.isclose(lp, float(raw[0, token]), rel_tol=1e-6, abs_tol=1e-6)
    assert out.logprobs[1] is None
    assert list(out.logprobs[2]) == [out.token_ids[2]]
    assert math.isclose(
        out.logprobs[2][out.token_ids[2]], float(raw[2, out.token_ids[2]]), rel_tol=1e-6
    )


# ---- logit_bias -----------------------------------------------------------------------------


def test_logit_bias_minus_100_bans_and_plus_100_forces():
    logits = random_logits(3)
    top = int(logits[0].argmax())
    low = int(logits[1].argmin())
    seqs = [
        make_seq(temperature=0.0, logit_bias={top: -100}),
        make_seq(temperature=1.0, seed=3, logit_bias={low: 100}),
        make_seq(temperature=0.0),  # no bias: untouched by its neighbours'
    ]
    out = Sampler()(logits, seqs)
    masked = logits[0].clone()
    masked[top] = float("-inf")
    assert out.token_ids == [int(masked.argmax()), low, int(logits[2].argmax())]


def test_logit_bias_is_added_and_ids_past_the_vocabulary_are_skipped():
    logits = torch.zeros(1, VOCAB)
    logits[0, 4] = 1.0
    out = Sampler()(logits, [make_seq(temperature=0.0, logit_bias={9: 1.5, VOCAB + 7: 100})])
    assert out.token_ids == [9]


@pytest.mark.parametrize("bias", [{3: 100.5}, {-1: 1.0}])
def test_logit_bias_out_of_range_is_refused(bias):
    with pytest.raises(InvalidRequestError, match="logit_bias"):
        SamplingParams(logit_bias=bias)
