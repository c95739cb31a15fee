"""DeepSeek Mixture-of-Experts: routers (V2 softmax, V3 sigmoid + bias), grouped experts, shared experts.

Routing picks `top_k` routed experts per token; group-limited routing first keeps the
`topk_group` best of `n_group` expert groups (so a token's experts sit on few devices) and
picks among those. Experts run on the tokens routed to them only: the (token, expert) pairs
are sorted by expert and each expert multiplies one contiguous slice, so compute follows the
activated parameters, not the total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from localseek.models.layers import GatedMLP

# topk_method values of the published configs.
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
SCORING_FUNCS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class MoEArgs:
    """Routing and expert shapes from an HF DeepSeek config (names as in config.json)."""

    hidden_size: int
    moe_intermediate_size: int
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    scoring_func: str  # "softmax" (V2) | "sigmoid" (V3)
    topk_method: str  # "greedy" | "group_limited_greedy" (V2) | "noaux_tc" (V3)
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    # DeepSeek-V2's reference code scales the routing weights only when it does not
    # renormalise them; V3's always scales. Published V2 configs never renormalise.
    scale_after_norm: bool
    hidden_act: str  # experts use SiLU; the config parser rejects anything else


class Router(nn.Module):
    """Token -> (weights [T, top_k] float32, expert ids [T, top_k]), computed in float32.

    The gate stays float32 whatever the model dtype: rounding the logits to bfloat16 would
    flip near-tied expert choices.
    """

    def __init__(self, args: MoEArgs):
        super().__init__()
        self.args = args
        e = args.n_routed_experts
        self.weight = nn.Parameter(torch.empty(e, args.hidden_size, dtype=torch.float32))
        if args.topk_method == "noaux_tc":
            # Load-balancing bias: shifts which experts are chosen, never their weights.
            self.e_score_correction_bias = nn.Parameter(
                torch.zeros(e, dtype=torch.float32), requires_grad=False
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.args
        logits = F.linear(x.float(), self.weight)  # [T, experts]
        scores = logits.softmax(dim=-1) if a.scoring_func == "softmax" else logits.sigmoid()
        if a.topk_method == "noaux_tc":
            choice = scores + self.e_score_correction_bias
            # A group's strength: the sum of its two best biased scores.
            group_scores = self._grouped(choice).topk(2, dim=-1).values.sum(dim=-1)
            choice = self._keep_best_groups(choice, group_scores, float("-inf"))
            ids = choice.topk(a.num_experts_per_tok, dim=-1).indices
            weights = scores.gather(1, ids)
        elif a.topk_method == "group_limited_greedy":
            group_scores = self._grouped(scores).max(dim=-1).values
            masked = self._keep_best_groups(scores, group_scores, 0.0)
            weights, ids = masked.topk(a.num_experts_per_tok, dim=-1)
        else:  # greedy
            weights, ids = scores.topk(a.num_experts_per_tok, dim=-1)
        normalise = a.norm_topk_prob and a.num_experts_per_tok > 1
        if normalise:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        if a.scale_after_norm or not normalise:
            weights = weights * a.routed_scaling_factor
        return weights, ids

    def _grouped(self, scores: torch.Tensor) -> torch.Tensor:
        # [T, experts] -> [T, n_group, experts // n_group]
        return scores.view(scores.shape[0], self.args.n_group, -1)

    def _keep_best_groups(
        self, scores: torch.Tensor, group_scores: torch.Tensor, fill: float
    ) -> torch.Tensor:
        """scores with every expert outside the topk_group best groups set to `fill`."""
        best = group_scores.topk(self.args.topk_group, dim=-1).indices  # [T, topk_group]
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best, True)
        keep = keep[:, :, None].expand_as(self._grouped(scores)).reshape_as(scores)
        return scores.masked_fill(~keep, fill)


class RoutedExperts(nn.Module):
    """All routed experts' weights stacked: w13 [E, 2 * inter, hidden] (gate; up), w2 [E, hidden, inter].

    Loaded from HF's per-expert `experts.{e}.{gate,up,down}_proj.weight` by the model.
    """

    def __init__(self, args: MoEArgs, dtype: torch.dtype):
        super().__init__()
        e, h, i = args.n_routed_experts, args.hidden_size, args.moe_intermediate_size
        self.intermediate_size = i
        self.w13 = nn.Parameter(torch.empty(e, 2 * i, h, dtype=dtype), requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(e, h, i, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x [T, hidden], weights/ids [T, top_k] -> weighted sum of each token's experts [T, hidden]."""
        top_k = ids.shape[1]
        flat_ids = ids.flatten()  # [T * top_k]: pair p is token p // top_k
        order = flat_ids.argsort(stable=True)  # pairs grouped by expert
        counts = torch.bincount(flat_ids, minlength=self.w13.shape[0]).tolist()  # one sync
        token_of = order // top_k  # [T * top_k] token of each sorted pair
        x_sorted = x[token_of]  # [T * top_k, hidden]
        out_sorted = torch.empty_like(x_sorted)
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = slice(start, start + count)
            gate, up = F.linear(x_sorted[rows], self.w13[expert]).split(
                self.intermediate_size, dim=-1
            )  # [count, inter] each
            out_sorted[rows] = F.linear(F.silu(gate) * up, self.w2[expert])
            start += count
        scaled = out_sorted * weights.flatten()[order, None]  # float32 routing weights
        out = torch.zeros_like(x)
        return out.index_add_(0, token_of, scaled.to(x.dtype))


class DeepseekMoE(nn.Module):
    """Routed experts plus always-on shared experts; HF names gate / experts / shared_experts."""

    def __init__(self, args: MoEArgs, dtype: torch.dtype):
        super().__init__()
        self.gate = Router(args)
        self.shared_experts = None
        if args.n_shared_experts:
            self.shared_experts = GatedMLP(
                args.hidden_size,
                args.moe_intermediate_size * args.n_shared_experts,
                args.hidden_act,
                dtype=dtype,
            )
        self.experts = RoutedExperts(args, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, hidden] -> [T, hidden]."""
        weights, ids = self.gate(x)
        out = self.experts(x, weights, ids)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out
