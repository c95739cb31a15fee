"""Sampler: next tokens from logits with penalties, temperature, top-k/top-p/min-p, seeds, logprobs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from localseek.engine.grammar import GrammarMasks
from localseek.engine.sequence import Sequence
from localseek.sampling_params import SamplingParams

# Temperatures below this are treated as greedy: dividing by them overflows float32 logits.
_MIN_TEMPERATURE = 1e-5
_MASK64 = (1 << 64) - 1
# Rows at least this long take the two-level argmax (row_argmax); shorter ones torch's own.
_BLOCK = 512
_TWO_LEVEL_MIN = 32 * _BLOCK


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[dict[int, float] | None]  # per seq: {token_id: logprob}, chosen token included


def seed_for_position(seed: int, position: int) -> int:
    """A 63-bit generator seed from (request seed, output position) via splitmix64 mixing.

    Re-seeding per position makes a seeded token independent of how many random numbers other
    requests in the batch (or earlier steps, or a preemption recompute) consumed.
    """
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


class Sampler:
    """Chooses one token per sequence from its logits row; rows never influence each other.

    Order per row: logit_bias, min_tokens mask, repetition penalty (HF: prompt + output tokens),
    presence/frequency penalties (OpenAI: output tokens), then greedy argmax if temperature is
    0, else temperature, top-k, top-p, min-p, and a draw. The grammar mask of rows that carry
    a grammar comes after the penalties. Common rows (no penalty, no seed) are
    processed as one batch; per-row work happens only for rows that ask for it.
    """

    def __init__(self, grammar: GrammarMasks | None = None) -> None:
        self._generators: dict[torch.device, torch.Generator] = {}
        self._grammar = grammar

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        assert logits.dim() == 2 and logits.shape[0] == len(seqs), (logits.shape, len(seqs))
        raw = logits.float()  # [S, V]
        processed = self._process(raw, seqs)
        if self._grammar is not None:
            processed = self._grammar.masked(processed, seqs, copy=processed is raw)
        else:
            assert all(s.sampling_params.grammar is None for s in seqs), "no GrammarMasks"
        sampled_rows = [
            i for i, s in enumerate(seqs) if s.sampling_params.temperature >= _MIN_TEMPERATURE
        ]
        if len(sampled_rows) == len(seqs):  # no greedy row: no argmax, no row gather
            chosen = self._sample(processed, seqs)
        else:
            # Greedy for every row (one batched op; ties -> lowest id), sampled rows replaced.
            chosen = row_argmax(processed)  # [S]
            if sampled_rows:
                index = torch.tensor(sampled_rows, device=raw.device)
                chosen[index] = self._sample(processed[index], [seqs[i] for i in sampled_rows])
        logprobs = _logprobs(raw, chosen, seqs)
        token_ids = chosen.tolist()
        if self._grammar is not None:
            self._grammar.advance(seqs, token_ids)
        return SamplerOutput(token_ids=token_ids, logprobs=logprobs)

    # ---- logits processing ----------------------------------------------------------------

    def _process(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Min-tokens masking and penalties, on a copy only when some row needs them."""
        out = logits
        for row, seq in enumerate(seqs):
            params = seq.sampling_params
            banned = _banned_before_min_tokens(seq)
            needs_rep = params.repetition_penalty != 1.0
            needs_openai = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
            if not (banned or needs_rep or needs_openai or params.logit_bias):
                continue
            if out is logits:
                out = logits.clone()
            if params.logit_bias:
                _add_logit_bias(out[row], params.logit_bias)
            if banned:
                ids = torch.tensor([t for t in banned if t < out.shape[1]], device=out.device)
                out[row, ids] = float("-inf")
            if needs_rep:
                _repetition_penalty(out[row], seq, params.repetition_penalty)
            if needs_openai and seq.output_token_ids:
                _openai_penalties(out[row], seq, params.presence_penalty, params.frequency_penalty)
        return out

    # ---- sampling -------------------------------------------------------------------------

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Temperature, top-k/top-p/min-p, then one uniform draw u per row, and the first token
        whose cumulative probability exceeds u (inverse CDF; sums in float64, so even a
        262,144-token row's tail keeps its share). One random number a row instead of one a
        token: an exponential race (argmax p / q, q ~ Exp(1) per token) spent ~7.7 ms of CPU
        drawing a 262,144-token row's q, the inverse CDF ~0.3 ms of sums."""
        device = logits.device
        params = [s.sampling_params for s in seqs]
        temperature = torch.tensor([p.temperature for p in params], device=device)
        logits = logits / temperature.unsqueeze(1)  # [S, V]
        if any(p.top_k > 0 or p.top_p < 1.0 or p.min_p > 0.0 for p in params):
            logits = mask_top_k_top_p_min_p(logits, params)
        cdf = torch.softmax(logits, dim=-1).double().cumsum_(dim=-1)  # [S, V]
        seeded = [row for row, p in enumerate(params) if p.seed is not None]
        u = torch.empty(len(seqs), 1, dtype=torch.float64, device=device)  # [S, 1]
        if len(seeded) < len(seqs):
            u.uniform_()  # unseeded rows: the default generator, one call for the batch
        for row in seeded:
            u[row] = self._seeded_uniform(seqs[row], device)
        total = cdf[:, -1:]  # [S, 1], 1 up to rounding
        # strictly below the total, so some token's cumulative probability exceeds the point
        point = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
        # in range even for a row with no finite logit (NaN sums), as argmax would be
        return torch.searchsorted(cdf, point, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)

    def _seeded_uniform(self, seq: Sequence, device: torch.device) -> torch.Tensor:
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        seed = seq.sampling_params.seed
        generator.manual_seed(seed_for_position(seed, seq.num_output_tokens))
        return torch.rand(1, dtype=torch.float64, device=device, generator=generator)


def row_argmax(x: torch.Tensor) -> torch.Tensor:
    """argmax over the last dim of x [S, V], first index on ties, as torch.argmax.

    torch's CPU argmax over a 262,144-token vocabulary takes ~2 ms for 16 rows, 10x its amax:
    so find each row's first block of _BLOCK holding the row max with amax, then argmax only
    inside that block (the first block whose max equals the row max holds the first max).
    """
    rows, vocab = x.shape
    if vocab < _TWO_LEVEL_MIN:
        return x.argmax(dim=-1)
    whole = vocab - vocab % _BLOCK
    block_max = x[:, :whole].view(rows, whole // _BLOCK, _BLOCK).amax(dim=-1)  # [S, B]
    if whole < vocab:
        block_max = torch.cat((block_max, x[:, whole:].amax(dim=-1, keepdim=True)), dim=1)
    start = block_max.argmax(dim=-1, keepdim=True) * _BLOCK  # [S, 1]
    # The ragged last block repeats index V-1 past the end: a repeat never comes first.
    offsets = torch.arange(_BLOCK, device=x.device)
    index = (start + offsets).clamp_(max=vocab - 1)  # [S, _BLOCK]
    inside = x.gather(1, index).argmax(dim=-1, keepdim=True)  # [S, 1]
    return index.gather(1, inside).squeeze(1)


def _add_logit_bias(row: torch.Tensor, bias: tuple[tuple[int, float], ...]) -> None:
    """OpenAI's logit_bias, in place: added to the logits, and -100 bans the token outright
    (a finite -100 might not beat a model's logit spread)."""
    vocab = row.shape[0]
    pairs = [(t, b) for t, b in bias if t < vocab]
    if not pairs:
        return
    ids = torch.tensor([t for t, _ in pairs], device=row.device)  # [B]
    values = torch.tensor([b for _, b in pairs], device=row.device, dtype=row.dtype)  # [B]
    values = values.masked_fill(values <= -100.0, float("-inf"))
    row.index_add_(0, ids, values)


def _banned_before_min_tokens(seq: Sequence) -> list[int]:
    params = seq.sampling_params
    if seq.num_output_tokens >= params.min_tokens:
        return []
    banned = set(params.stop_token_ids)
    if not params.ignore_eos:
        banned |= seq.eos_token_ids
    return sorted(banned)


def _repetition_penalty(row: torch.Tensor, seq: Sequence, penalty: float) -> None:
    """HF semantics, in place: each token seen in prompt or output has its logit divided by the
    penalty if positive, multiplied if negative (so it always becomes less likely for p > 1)."""
    ids = torch.tensor(seq.prompt_token_ids + seq.output_token_ids, device=row.device)
    ids = ids[ids < row.shape[0]].unique()  # [U]
    if ids.numel() == 0:
        return
    seen = row[ids]
    row[ids] = torch.where(seen > 0, seen / penalty, seen * penalty)


def _openai_penalties(row: torch.Tensor, seq: Sequence, presence: float, frequency: float) -> None:
    """OpenAI semantics, in place: logit -= frequency * count + presence * (count > 0),
    counting output tokens only."""
    vocab = row.shape[0]
    ids = torch.tensor(seq.output_token_ids, device=row.device)
    counts = torch.bincount(ids[ids < vocab], minlength=vocab)[:vocab].to(row.dtype)  # [V]
    row -= frequency * counts + presence * (counts > 0).to(row.dtype)


def mask_top_k_top_p_min_p(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Set to -inf every token outside each row's top-k / top-p / min-p set (HF semantics).

    top-k keeps every token tied with the k-th largest logit; top-p keeps a token while the
    probability mass strictly above it is below top_p; min-p drops tokens whose probability is
    below min_p times the most likely one. Rows with a feature disabled are left bit-exact.
    """
    device = logits.device
    vocab = logits.shape[1]
    top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device).unsqueeze(1)  # [S, 1]
    min_p = torch.tensor([p.min_p for p in params], device=device).unsqueeze(1)  # [S, 1]
    if any(p.top_k > 0 for p in params):
        sorted_logits, _ = logits.sort(dim=-1, descending=True)  # [S, V]
        kth = sorted_logits.gather(1, (top_k.clamp(max=vocab) - 1).unsqueeze(1))  # [S, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if any(p.top_p < 1.0 for p in params):
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)  # [S, V]
        mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs  # [S, V]
        drop_sorted = (mass_above >= top_p) & (top_p < 1.0)
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if any(p.min_p > 0.0 for p in params):
        probs = torch.softmax(logits, dim=-1)  # [S, V]
        threshold = min_p * probs.max(dim=-1, keepdim=True).values  # [S, 1]
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def _logprobs(raw: torch.Tensor, chosen: torch.Tensor, seqs: list[Sequence]) -> list:
    """Per seq: {token: logprob} of the raw model distribution, top-n plus the chosen token."""
    wanted = [(i, s.sampling_params.logprobs) for i, s in enumerate(seqs)]
    wanted = [(i, n) for i, n in wanted if n is not None]
    result: list[dict[int, float] | None] = [None] * len(seqs)
    if not wanted:
        return result
    rows = torch.tensor([i for i, _ in wanted], device=raw.device)
    logprobs = torch.log_softmax(raw[rows], dim=-1)  # [W, V]
    chosen_lp = logprobs.gather(1, chosen[rows].unsqueeze(1)).squeeze(1).tolist()  # [W]
    max_n = min(max(n for _, n in wanted), raw.shape[1])
    top_lp, top_ids = logprobs.topk(max_n, dim=-1)  # [W, max_n] each
    top_lp, top_ids = top_lp.tolist(), top_ids.tolist()
    chosen_ids = chosen[rows].tolist()
    for w, (i, n) in enumerate(wanted):
        entry = {int(t): float(lp) for t, lp in zip(top_ids[w][:n], top_lp[w][:n], strict=True)}
        entry[chosen_ids[w]] = float(chosen_lp[w])
        result[i] = entry
    return result
