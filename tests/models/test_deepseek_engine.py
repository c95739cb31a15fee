"""LLM.generate on DeepSeek-V2/V3 (latent cache, MoE) gives transformers' greedy tokens, whatever the engine does.

Prefix caching, prompts chunked by a tiny token budget, sequences preempted by a tiny KV pool:
none of these may change a single greedy token.
"""

from __future__ import annotations

import pytest
from reference import assert_engine_matches, reference_greedy
from tiny_deepseek import make_tiny_deepseek

from localseek import LLM, SamplingParams

MAX_NEW = 10
_SHARED = list(range(3, 43))
PROMPTS = [[5, 17, 99], list(range(10, 31)), _SHARED + [200, 201, 202], _SHARED + [300, 301]]
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True)
ENGINE_SETUPS = {
    "default": {},
    "chunked-prefill": {"max_num_batched_tokens": 7},
    # 18 blocks of 4 tokens: one sequence always fits, all four together do not.
    "preemption": {"block_size": 4, "kv_cache_tokens": 72, "max_num_batched_tokens": 64},
}


@pytest.fixture(scope="module", params=["v2-lite", "v3"])
def model_and_reference(request, tmp_path_factory):
    model_dir = make_tiny_deepseek(
        tmp_path_factory.mktemp("dse"), request.param, with_tokenizer=True
    )
    return model_dir, reference_greedy(model_dir, PROMPTS, MAX_NEW)


@pytest.mark.parametrize("setup", list(ENGINE_SETUPS))
def test_greedy_matches_transformers(model_and_reference, setup):
    model_dir, expected = model_and_reference
    assert_engine_matches(
        model_dir, PROMPTS, GREEDY, expected, preempts=setup == "preemption", **ENGINE_SETUPS[setup]
    )


def test_prefix_cache_reuses_latents(model_and_reference):
    model_dir, expected = model_and_reference
    llm = LLM(str(model_dir), dtype="float32", device="cpu", show_progress=False)
    llm.generate([PROMPTS[2]], GREEDY)
    second = llm.generate([PROMPTS[3]], GREEDY)[0]
    assert second.num_cached_tokens == 32  # two full 16-token blocks of the shared prefix
    assert second.token_ids == expected[3]
    # The pool the engine allocated holds one latent + rotary key tensor per layer.
    caches = llm.engine.runner.kv_caches
    assert [tuple(t.shape[2:]) for layer in caches for t in layer] == [(16 + 4,)] * 3
