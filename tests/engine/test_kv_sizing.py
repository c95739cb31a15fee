"""The default KV pool: one long request plus every other sequence at a chat length, within
the memory budget; an explicit size wins."""

from __future__ import annotations

import pytest

from localseek.engine.kv_sizing import LONG_REQUEST_TOKENS, TYPICAL_TOKENS, plan_kv_pool

GiB = 1 << 30


def plan(**overrides):
    args = dict(
        requested_tokens=None,
        max_num_seqs=64,
        max_model_len=32768,
        bytes_per_token=36864,
        budget_bytes=8 * GiB,
        block_size=16,
    )
    return plan_kv_pool(**{**args, **overrides})


def test_sized_for_one_long_request_and_the_rest_at_chat_length():
    p = plan()
    assert p.tokens == LONG_REQUEST_TOKENS + 63 * TYPICAL_TOKENS  # not 64 x 32768
    assert "room for one 8192-token request plus 63 more sequences" in p.reason


def test_a_short_context_model_plans_its_own_length():
    p = plan(max_model_len=512, max_num_seqs=4)
    assert p.tokens == 4 * 512


def test_the_memory_budget_caps_it_and_says_so():
    p = plan(budget_bytes=256 << 20)
    assert p.tokens == (256 << 20) // 36864 // 16 * 16
    assert "capped by the memory budget of 256 MiB" in p.reason


def test_an_explicit_size_wins():
    p = plan(requested_tokens=1000)
    assert (p.blocks, p.tokens, p.reason) == (63, 1008, "--kv-cache-tokens")


def test_a_budget_without_one_block_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="--kv-cache-tokens"):
        plan(budget_bytes=1000)
