"""Constrained decoding: llguidance token masks for the rows whose SamplingParams carry a grammar.

A request's grammar (llguidance's JSON grammar format, built from a JSON schema by
`json_schema_grammar`) gets one `LLMatcher`, kept on its Sequence and advanced by every sampled
token. Each step the masks of all constrained rows are computed in one parallel llguidance call
into a bitmask (one bit per token), and only those rows' logits are touched: unconstrained rows
in the batch pay nothing. llguidance was chosen over xgrammar and outlines-core by measurement
(benchmarks/grammar_mask.py, numbers in docs/api.md); it reads the tokenizer.json the engine
already has, so no transformers tokenizer is needed at serving time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
import torch

from localseek.errors import InvalidRequestError

if TYPE_CHECKING:
    from localseek.engine.sequence import Sequence
    from localseek.weights.tokenizer import Tokenizer

# One fixed layout, `{"a": 1, "b": [2, 3]}`: free whitespace lets a model loop on newlines
# (a known failure of constrained JSON) and a random-weight model never stop.
_JSON_LAYOUT: dict[str, Any] = {  # llguidance's JsonCompileOptions
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
}


def json_schema_grammar(schema: dict[str, Any], *, param: str = "response_format") -> str:
    """The llguidance grammar accepting exactly the JSON documents `schema` allows, laid out as
    `{"a": 1, "b": [2, 3]}`, or a 400 naming `param` when the schema cannot be compiled."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), overrides=_JSON_LAYOUT
        )
    except ValueError as exc:
        raise InvalidRequestError(f"{param}: invalid JSON schema: {exc}", param=param) from exc
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise InvalidRequestError(f"{param}: unsupported JSON schema: {error}", param=param)
    return grammar


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's and DeepSeek's `response_format: {"type": "json_object"}`)."""
    return json_schema_grammar({"type": "object"})


class GrammarMasks:
    """Masks and advances the constrained rows of a batch; built once per engine.

    The llguidance tokenizer (a pass over the whole vocabulary, seconds for 262k tokens) is
    built at the first constrained request, so engines that never see one never pay for it.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int):
        self._tokenizer = tokenizer
        self._vocab = vocab_size  # logits columns, >= the tokenizer's ids
        self._words = (vocab_size + 31) // 32  # int32 words per bitmask row
        self._lltok: llguidance.LLTokenizer | None = None
        self._executor: llguidance.LLExecutor | None = None

    def _llguidance_tokenizer(self) -> llguidance.LLTokenizer:
        if self._lltok is None:
            eos = sorted(self._tokenizer.eos_token_ids)
            self._lltok = llguidance.LLTokenizer(
                self._tokenizer.backend.to_str(), n_vocab=self._vocab, eos_token=eos or None
            )
            self._executor = llguidance.LLExecutor()
        return self._lltok

    def _matcher(self, seq: Sequence) -> llguidance.LLMatcher | None:
        """The row's matcher; None while its grammar has not started (see `_constrained`)."""
        matcher = seq.grammar_matcher
        if matcher is None:
            constrained = _constrained(seq)
            if constrained is None:
                return None
            matcher = llguidance.LLMatcher(
                self._llguidance_tokenizer(), seq.sampling_params.grammar, log_level=0
            )
            matcher.consume_tokens(constrained)
            seq.grammar_matcher = matcher
        return matcher

    def masked(self, logits: torch.Tensor, seqs: list[Sequence], *, copy: bool) -> torch.Tensor:
        """`logits` [S, V] with every token a constrained row's grammar forbids next at -inf.

        Unchanged (the same tensor) when no row has a grammar; otherwise changed in place, on
        a copy first when `copy` (the step's raw logits, which logprobs read, are inference
        tensors that cannot change in place anyway).
        """
        rows = [
            i
            for i, s in enumerate(seqs)
            if s.sampling_params.grammar is not None and self._matcher(s) is not None
        ]
        if not rows:
            return logits
        if copy:
            logits = logits.clone()
        matchers = [(seqs[row].grammar_matcher, k) for k, row in enumerate(rows)]
        bitmask = np.zeros((len(rows), self._words), dtype=np.int32)  # [R, W], bit = allowed
        assert self._executor is not None  # made with the tokenizer
        self._executor.unsafe_compute_mask_ptr(
            matchers, bitmask.ctypes.data, self._words * 4, len(rows)
        )
        # One byte per token: 1 where forbidden (little-endian bit order, as llguidance writes).
        banned = np.unpackbits(np.invert(bitmask.view(np.uint8)), axis=1, bitorder="little")
        banned_rows = torch.from_numpy(banned).view(torch.bool)[:, : self._vocab]  # [R, V]
        banned_rows = banned_rows.to(logits.device)
        if len(rows) == logits.shape[0]:
            logits.masked_fill_(banned_rows, float("-inf"))
        else:
            for k, row in enumerate(rows):  # a row is a contiguous view: no gather, no scatter
                logits[row].masked_fill_(banned_rows[k], float("-inf"))
        return logits

    @staticmethod
    def advance(seqs: list[Sequence], token_ids: list[int]) -> None:
        """Feed each constrained row its sampled token (a grammar that starts after a token
        gets its matcher at the next step, from the tokens after it)."""
        for seq, token_id in zip(seqs, token_ids, strict=True):
            if seq.grammar_matcher is not None:
                seq.grammar_matcher.consume_token(token_id)


def _constrained(seq: Sequence) -> list[int] | None:
    """The output tokens the grammar covers, or None while it has not started."""
    start = seq.sampling_params.grammar_after_token_id
    if start is None:
        return list(seq.output_token_ids)
    output = seq.output_token_ids
    if start not in output:
        return None
    return output[output.index(start) + 1 :]
