"""Sliding-window layers give their old KV blocks back, and not one greedy token changes.

The tiny Gemma 3 has two local layers (window 5) and one global layer: three KV cache groups
of one layer. The tiny Mistral with a window has every layer windowed: one window group.
Prompts are long against the window so blocks fall out of it during prefill and decode.
"""

from __future__ import annotations

import pytest
from reference import assert_engine_matches, reference_greedy
from tiny_gemma3 import make_tiny_gemma3
from tiny_models import make_tiny_model

from localseek import LLM, SamplingParams
from localseek.engine.block_manager import NULL_BLOCK

MAX_NEW = 14
_SHARED = list(range(3, 37))
PROMPTS = [
    list(range(40, 70)),
    [9, 8, 7],
    _SHARED + [200, 201, 202],
    _SHARED + [300, 301],
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True)

SETUPS = {
    "default": {"block_size": 4},
    "no-prefix-cache": {"block_size": 4, "enable_prefix_caching": False},
    "chunked-prefill": {"block_size": 4, "max_num_batched_tokens": 7},
    # 10 whole blocks of 4 (30 one-layer pages for Gemma): one sequence fits, four do not.
    "preemption": {"block_size": 4, "kv_cache_tokens": 40, "max_num_batched_tokens": 16},
}


@pytest.fixture(scope="module", params=["gemma3", "mistral-window"])
def model_and_reference(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "gemma3":
        model_dir = make_tiny_gemma3(root)
    else:
        model_dir = make_tiny_model(root, "mistral", sliding_window=6)
    return model_dir, reference_greedy(model_dir, PROMPTS, MAX_NEW)


def make_llm(model_dir, **setup) -> LLM:
    return LLM(str(model_dir), dtype="float32", device="cpu", show_progress=False, **setup)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_greedy_matches_transformers_while_window_blocks_are_released(model_and_reference, setup):
    model_dir, expected = model_and_reference
    llm = assert_engine_matches(
        model_dir, PROMPTS, GREEDY, expected, preempts=setup == "preemption", **SETUPS[setup]
    )
    bm = llm.engine.block_manager
    assert bm.windows.count(None) < bm.num_groups, "the model must have a window group"


def test_window_groups_hold_a_bounded_number_of_blocks_during_decode(model_and_reference):
    model_dir, expected = model_and_reference
    llm = make_llm(model_dir, block_size=4)
    engine, bm = llm.engine, llm.engine.block_manager
    engine.add_request("long", PROMPTS[0], GREEDY)
    seq = engine.scheduler.get("long")
    windows = bm.windows
    most_live = 0
    tokens = []
    while engine.scheduler.has_unfinished():
        for out in engine.step():
            tokens = out.token_ids
        if seq.is_finished:
            break
        for window, table in zip(windows, seq.block_tables, strict=True):
            live = sum(b != NULL_BLOCK for b in table)
            if window is None:
                assert live == len(table)  # full attention keeps everything
            elif seq.num_output_tokens >= 2:  # a decode step has allocated since the prefill
                most_live = max(most_live, live)
                # The last query saw `window` keys over at most blocks_for(window) + 1 blocks.
                assert live <= bm.blocks_for(window) + 1, (live, table)
    assert tokens == expected[0]
    assert most_live < bm.blocks_for(len(PROMPTS[0]) + MAX_NEW), "nothing was released"


def test_shared_prefix_hits_through_window_groups(model_and_reference):
    model_dir, expected = model_and_reference
    llm = make_llm(model_dir, block_size=4)
    first = llm.generate([PROMPTS[2]], GREEDY)[0]
    second = llm.generate([PROMPTS[3]], GREEDY)[0]
    assert [first.token_ids, second.token_ids] == expected[2:]
    assert second.num_cached_tokens == 32  # 8 whole blocks of the 34 shared tokens


def test_context_longer_than_the_pool_could_hold_without_releasing(tmp_path):
    model_dir = make_tiny_gemma3(tmp_path)
    prompt = list(range(20, 120))
    (expected,) = reference_greedy(model_dir, [prompt], 6)
    # 16 whole blocks (64 tokens) of KV: a 106-token context only fits because the local
    # layers keep ~2 blocks each instead of 27.
    llm = make_llm(model_dir, block_size=4, kv_cache_tokens=64, max_num_batched_tokens=8)
    bm = llm.engine.block_manager
    assert bm.capacity_tokens >= 106 > 64
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    assert out.token_ids == expected
