"""Exact refinement: the largest outputs of an approximate projection found and made exact."""

from __future__ import annotations

import torch

from localseek.models.top_refine import refine_top, top_candidates


def test_top_candidates_are_the_largest_entries_of_each_row():
    """The block-wise search (rows of 8192 = 16 x 8 candidates x 64-wide blocks) finds the same
    set as topk, also when the winners crowd into one block or sit in the last one."""
    torch.manual_seed(1)
    y = torch.randn(4, 8192)
    y[1, 64:72] += 10  # all 8 winners in one block
    y[2, -8:] += 10  # in the last block
    y[3, ::1024] += 10  # one per distant block
    found = top_candidates(y, 8).sort(dim=-1).values
    assert torch.equal(found, y.topk(8, dim=-1).indices.sort(dim=-1).values)
    assert found[1].tolist() == list(range(64, 72))


def test_refine_top_makes_the_largest_outputs_exact_and_leaves_the_rest():
    torch.manual_seed(2)
    weight, x = torch.randn(8192, 32).bfloat16(), torch.randn(3, 32).bfloat16()
    exact = x.float() @ weight.float().T  # [3, 8192]
    approx = exact + torch.randn_like(exact) * 0.05  # a quantized kernel's error
    refined = refine_top(weight, x, approx.clone(), 16)
    changed = refined != approx
    assert (changed.sum(dim=-1) == 16).all()  # exactly r per row rewritten ...
    torch.testing.assert_close(refined[changed], exact[changed])  # ... to the exact value
    assert torch.equal(refined.argmax(-1), exact.argmax(-1))
