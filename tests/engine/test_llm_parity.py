"""LLM.generate produces exactly transformers' greedy tokens, whatever the engine does inside.

Prefix caching on or off, prompts chunked by a tiny token budget, sequences preempted by a tiny
KV pool: none of these may change a single greedy token.
"""

from __future__ import annotations

import pytest
from reference import assert_engine_matches, reference_greedy
from tiny_models import make_tiny_model

from localseek import LLM, SamplingParams

ARCHS = ["llama", "qwen2", "mistral"]
MAX_NEW = 12

# Prompts of different lengths; the last two share a 40-token prefix so the cache is exercised.
_SHARED = list(range(3, 43))
PROMPTS = [
    [5, 17, 99],
    list(range(10, 31)),
    [7] * 9 + [101, 102],
    _SHARED + [200, 201, 202],
    _SHARED + [300, 301],
]


@pytest.fixture(scope="module", params=ARCHS)
def model_and_reference(request, tmp_path_factory):
    model_dir = make_tiny_model(tmp_path_factory.mktemp(request.param), request.param)
    return model_dir, reference_greedy(model_dir, PROMPTS, MAX_NEW)


GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True)

ENGINE_SETUPS = {
    "default": {},
    "no-prefix-cache": {"enable_prefix_caching": False},
    "chunked-prefill": {"max_num_batched_tokens": 7},
    # 22 blocks of 4 tokens: one sequence always fits, all five together do not.
    "preemption": {"block_size": 4, "kv_cache_tokens": 88, "max_num_batched_tokens": 64},
}


@pytest.mark.parametrize("setup", list(ENGINE_SETUPS))
def test_greedy_matches_transformers(model_and_reference, setup):
    model_dir, expected = model_and_reference
    assert_engine_matches(
        model_dir, PROMPTS, GREEDY, expected, preempts=setup == "preemption", **ENGINE_SETUPS[setup]
    )


def test_prefix_cache_hits_are_reported(model_and_reference):
    model_dir, expected = model_and_reference
    llm = LLM(str(model_dir), dtype="float32", device="cpu", show_progress=False)
    first = llm.generate([PROMPTS[3]], GREEDY)[0]
    second = llm.generate([PROMPTS[4]], GREEDY)[0]
    assert first.num_cached_tokens == 0
    # The shared 40-token prefix covers two full 16-token blocks.
    assert second.num_cached_tokens == 32
    assert second.token_ids == expected[4]


def test_seeded_sampling_is_batch_independent(model_and_reference):
    model_dir, _ = model_and_reference
    llm = LLM(str(model_dir), dtype="float32", device="cpu", show_progress=False)
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=10, ignore_eos=True)
    other = SamplingParams(temperature=1.0, max_tokens=14, ignore_eos=True)
    alone = llm.generate([PROMPTS[1]], seeded)[0].token_ids
    in_batch = llm.generate([PROMPTS[0], PROMPTS[1], PROMPTS[3]], [other, seeded, other])[
        1
    ].token_ids
    assert alone == in_batch
    different_seed = SamplingParams(
        temperature=0.9, top_p=0.95, seed=4321, max_tokens=10, ignore_eos=True
    )
    assert llm.generate([PROMPTS[1]], different_seed)[0].token_ids != alone
