"""transformers as the reference: greedy continuations of token-id prompts."""

from __future__ import annotations

import torch


def reference_greedy(model_dir, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """Greedy decoding with transformers (full recompute each step: simple and exact)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            for _ in range(max_new):
                next_id = model(ids).logits[0, -1].argmax().reshape(1, 1)
                ids = torch.cat([ids, next_id], dim=1)
            outs.append(ids[0, len(prompt) :].tolist())
    return outs
