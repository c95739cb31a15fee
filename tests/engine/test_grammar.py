"""GrammarMasks: constrained rows get their grammar's mask; other rows are left untouched."""

from __future__ import annotations

import json

import pytest
import torch

from localseek.engine.grammar import GrammarMasks, json_schema_grammar
from localseek.engine.sampler import Sampler
from localseek.engine.sequence import Sequence
from localseek.errors import InvalidRequestError
from localseek.sampling_params import SamplingParams
from localseek.weights.tokenizer import Tokenizer

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tiny_tokenizer import save_tiny_tokenizer

    return Tokenizer.from_pretrained_dir(save_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def seq(grammar: str | None = None, **params) -> Sequence:
    return Sequence("r", [1, 2, 3], SamplingParams(grammar=grammar, **params))


def test_rows_without_a_grammar_are_the_same_tensor_and_values(tokenizer):
    masks = GrammarMasks(tokenizer, vocab_size=512)
    logits = torch.randn(3, 512)
    assert masks.masked(logits, [seq(), seq(), seq()], copy=True) is logits
    grammar = json_schema_grammar(SCHEMA)
    out = masks.masked(logits, [seq(), seq(grammar), seq()], copy=True)
    assert out is not logits
    assert torch.equal(out[[0, 2]], logits[[0, 2]])
    allowed = out[1].isfinite().nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).startswith("{") for t in allowed)
    assert 512 - 1 not in allowed  # ids past the tokenizer's vocabulary are never allowed


def test_greedy_decoding_under_the_mask_spells_valid_json(tokenizer):
    sampler = Sampler(GrammarMasks(tokenizer, vocab_size=512))
    constrained = seq(json_schema_grammar(SCHEMA), temperature=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        token = sampler(torch.randn(1, 512, generator=generator), [constrained]).token_ids[0]
        if token in tokenizer.eos_token_ids:
            break
        constrained.output_token_ids.append(token)
    assert json.loads(tokenizer.decode(constrained.output_token_ids)) in (
        {"ok": True},
        {"ok": False},
    )


def test_a_sampler_without_grammar_support_refuses_a_grammar_row():
    with pytest.raises(AssertionError):
        Sampler()(torch.randn(1, 8), [seq(json_schema_grammar(SCHEMA))])


def test_a_bad_schema_is_a_400_naming_the_param():
    with pytest.raises(InvalidRequestError) as info:
        json_schema_grammar({"type": "objekt"}, param="response_format.json_schema.schema")
    assert info.value.param == "response_format.json_schema.schema"


def test_a_grammar_after_a_token_starts_only_once_that_token_is_out(tokenizer):
    masks = GrammarMasks(tokenizer, vocab_size=512)
    row = seq(json_schema_grammar(SCHEMA), grammar_after_token_id=7)
    logits = torch.randn(1, 512)
    assert masks.masked(logits, [row], copy=True) is logits  # free before token 7
    row.output_token_ids += [5, 7]
    allowed = masks.masked(logits, [row], copy=True)[0].isfinite().nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).startswith("{") for t in allowed)
