"""Exact refinement of a quantized projection's largest outputs (the vocabulary's top tokens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

REFINE_TOP = 32  # vocabulary projection: outputs per row recomputed from the dense weight
_CANDIDATE_BLOCK = 64  # top_candidates looks for the largest outputs block by block


def top_candidates(y: torch.Tensor, r: int) -> torch.Tensor:
    """Indices [M, r] of the r largest entries of each row of y [M, N] (order unspecified).

    torch.topk over 262,144 columns costs ~0.4 ms a row here; this takes each block's max
    (one cheap pass), keeps the r best blocks, and runs topk over their r * block entries only.
    It finds the same set: every entry of the row's top r lies in a block whose max is at
    least that entry, and fewer than r blocks can have a larger max.
    """
    rows, n = y.shape
    block = _CANDIDATE_BLOCK
    if n % block or n < 16 * r * block:
        return y.topk(min(r, n), dim=-1).indices
    best_blocks = y.view(rows, n // block, block).amax(dim=-1).topk(r, dim=-1).indices  # [M, r]
    offsets = torch.arange(block, device=y.device)
    index = (best_blocks.unsqueeze(-1) * block + offsets).view(rows, r * block)  # [M, r*block]
    return index.gather(1, y.gather(1, index).topk(r, dim=-1).indices)


def refine_top(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor, r: int) -> torch.Tensor:
    """y [M, N] float32, approximately x @ weight.T, with its r largest entries per row
    recomputed exactly from the dense weight [N, K] (in place).

    A quantized vocabulary projection ranks tokens slightly differently from the model it
    came from; sampling and greedy choices are made among the top few, so those are the ones
    worth exact values: r rows of the weight per sequence, next to nothing against the pass.
    """
    candidates = top_candidates(y, r)  # [M, r]
    rows = F.embedding(candidates, weight).float()  # [M, r, K]
    exact = torch.bmm(rows, x.float().unsqueeze(-1)).squeeze(-1)  # [M, r]
    return y.scatter_(1, candidates, exact)
