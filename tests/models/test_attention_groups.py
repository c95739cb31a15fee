"""Decode attention groups: every decoding row lands in exactly one group sized to the budget."""

from __future__ import annotations

import random

import pytest

from localseek.models.attention import _plan_groups


@pytest.mark.parametrize("budget", [0, 16, 100, 1000, 10**9])
def test_groups_cover_each_row_once_within_budget(budget):
    rng = random.Random(budget)
    lens = [rng.randint(1, 300) for _ in range(40)]
    groups = _plan_groups(lens, 16, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lens)))
    for group in groups:
        width = max(-(-lens[i] // 16) * 16 for i in group)
        assert len(group) == 1 or len(group) * width <= budget, (group, width, budget)


def test_groups_are_formed_longest_first_and_one_group_keeps_batch_order():
    lens = [5, 40, 20, 33]
    assert _plan_groups(lens, 16, 10**9) == [[0, 1, 2, 3]]
    assert _plan_groups(lens, 16, 0) == [[1], [3], [2], [0]]
    # 48-token rows pair up under a 96-token budget; the 32- and 16-token rows share one.
    assert _plan_groups(lens, 16, 96) == [[1, 3], [2, 0]]
