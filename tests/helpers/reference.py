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


def assert_engine_matches(
    model_dir,
    prompts: list[list[int]],
    params,
    expected: list[list[int]],
    *,
    preempts=False,
    **setup,
):
    """Generate through localseek (float32, CPU, engine `setup`) and assert it reproduces
    transformers' greedy tokens, leaves the KV pool whole and, if `preempts`, preempted.
    Returns the LLM for further checks."""
    from localseek import LLM

    llm = LLM(str(model_dir), dtype="float32", device="cpu", show_progress=False, **setup)
    outs = llm.generate(prompts, params)
    assert [o.token_ids for o in outs] == expected
    assert all(o.finish_reason == "length" for o in outs)
    bm = llm.engine.block_manager
    bm.assert_consistent()
    assert bm.num_free_blocks() == bm.num_total_blocks, "KV pool must be whole after the batch"
    if preempts:
        assert llm.engine.scheduler.num_preemptions_total > 0, "the tiny pool should preempt"
    return llm
