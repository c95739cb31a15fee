"""How many KV tokens the pool holds when the user does not say: from the model, the batch
limits and the memory present. Imports no torch.

The pool is planned for one request at a long context plus every other running sequence at
a typical chat length, not for max_num_seqs x max_model_len (for a 32k-context model at 64
sequences that is two million tokens), and never above the memory budget. Each choice is
logged with the numbers it came from; --kv-cache-tokens overrides it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LONG_REQUEST_TOKENS = 8192  # one request may use this much context (or the model's maximum)
TYPICAL_TOKENS = 1024  # the context planned for each other running sequence


@dataclass(frozen=True)
class KVPoolPlan:
    blocks: int  # blocks of block_size tokens (of all layers)
    tokens: int
    reason: str  # what the size came from, for the load log


def plan_kv_pool(
    *,
    requested_tokens: int | None,
    max_num_seqs: int,
    max_model_len: int,
    bytes_per_token: int,
    budget_bytes: int,
    block_size: int,
) -> KVPoolPlan:
    """The pool for these limits. Raises ValueError when the budget holds no block at all."""
    if requested_tokens is not None:
        blocks = math.ceil(requested_tokens / block_size)
        return KVPoolPlan(blocks, blocks * block_size, "--kv-cache-tokens")
    long_request = min(max_model_len, LONG_REQUEST_TOKENS)
    wanted = long_request + (max_num_seqs - 1) * min(max_model_len, TYPICAL_TOKENS)
    affordable = budget_bytes // max(1, bytes_per_token)
    tokens = min(wanted, affordable)
    blocks = tokens // block_size
    if blocks < 1:
        raise ValueError(
            f"the KV cache budget ({budget_bytes} bytes) holds no block of {block_size} tokens "
            f"at {bytes_per_token} bytes/token; set --kv-cache-tokens or free memory"
        )
    planned = (
        f"one {long_request}-token request plus {max_num_seqs - 1} more sequences of "
        f"{min(max_model_len, TYPICAL_TOKENS)} tokens (--max-num-seqs {max_num_seqs})"
    )
    if wanted <= affordable:
        reason = f"room for {planned}"
    else:
        reason = (
            f"capped by the memory budget of {budget_bytes / 2**20:.0f} MiB "
            f"(wanted {planned}: {wanted} tokens)"
        )
    return KVPoolPlan(blocks, blocks * block_size, reason)
