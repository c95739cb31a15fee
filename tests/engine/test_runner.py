"""ModelRunner: paged KV across steps — decode, chunked prefill and mixed batches match transformers."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_models import load_reference, make_tiny_model

from localseek.engine.runner import (
    ModelRunner,
    cpu_has_fast_bf16,
    kv_bytes_per_token,
    num_blocks_for_budget,
)
from localseek.engine.scheduler import ScheduledSeq as Step
from localseek.engine.sequence import Sequence
from localseek.models.registry import resolve_model_class
from localseek.sampling_params import SamplingParams
from localseek.weights.hf import HFWeights, read_hf_config, safetensors_files

BLOCK_SIZE = 4
NUM_BLOCKS = 48


class BlockPool:
    """Hands out blocks in shuffled order, so sequences interleave in the KV pool."""

    def __init__(self) -> None:
        self.free = list(range(NUM_BLOCKS))
        random.Random(0).shuffle(self.free)

    def cover(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_table) * BLOCK_SIZE < num_tokens:
            seq.block_table.append(self.free.pop())


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral-window"])
def setup(request, tmp_path_factory):
    arch = request.param
    overrides = {"sliding_window": 6} if arch == "mistral-window" else {}
    model_dir = make_tiny_model(tmp_path_factory.mktemp(arch), arch.split("-")[0], **overrides)
    config = read_hf_config(model_dir)
    model = resolve_model_class(config)(config, torch.float32, torch.device("cpu"))
    model.load_weights(HFWeights(safetensors_files(model_dir)))
    return model.eval(), load_reference(model_dir)


def reference(ref_model, token_ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return ref_model(torch.tensor([token_ids])).logits[0]


def run_step(runner: ModelRunner, pool: BlockPool, steps: list[Step]) -> torch.Tensor:
    """One engine step as the scheduler + engine would do it around the runner."""
    for step in steps:
        pool.cover(step.seq, step.seq.num_computed_tokens + step.num_new_tokens)
    logits = runner.execute(steps)
    for step in steps:
        step.seq.num_computed_tokens += step.num_new_tokens
    return logits


def tokens(seed: int, n: int) -> list[int]:
    return random.Random(seed).sample(range(500), n)


def test_incremental_decode_matches_full_recompute(setup):
    model, ref_model = setup
    runner = ModelRunner(model, BLOCK_SIZE, NUM_BLOCKS, "cpu", torch.float32)
    pool = BlockPool()
    prompt, continuation = tokens(1, 11), tokens(2, 14)
    seq = Sequence("a", prompt, SamplingParams())
    expected = reference(ref_model, prompt + continuation)
    logits = run_step(runner, pool, [Step(seq, len(prompt))])
    torch.testing.assert_close(logits[0], expected[len(prompt) - 1], atol=1e-4, rtol=1e-4)
    for token in continuation:
        seq.output_token_ids.append(token)
        logits = run_step(runner, pool, [Step(seq, 1)])
        assert logits.shape == (1, expected.shape[-1])
        torch.testing.assert_close(logits[0], expected[seq.num_tokens - 1], atol=1e-4, rtol=1e-4)
    assert len(seq.block_table) == 7  # 25 tokens over blocks of 4


def test_mixed_batches_of_chunks_and_decodes(setup):
    model, ref_model = setup
    runner = ModelRunner(model, BLOCK_SIZE, NUM_BLOCKS, "cpu", torch.float32)
    pool = BlockPool()
    a = Sequence("a", tokens(3, 9), SamplingParams())
    b = Sequence("b", tokens(4, 13), SamplingParams())
    c = Sequence("c", tokens(5, 20), SamplingParams())
    extra = {s.request_id: tokens(10 + i, 4) for i, s in enumerate((a, b, c))}
    full = {s.request_id: s.prompt_token_ids + extra[s.request_id] for s in (a, b, c)}
    expected = {rid: reference(ref_model, ids) for rid, ids in full.items()}

    def decode(seq: Sequence) -> Step:
        seq.output_token_ids.append(extra[seq.request_id][seq.num_output_tokens])
        return Step(seq, 1)

    # Each step: (steps, sequences expected to get a logits row, in order).
    plan = [
        lambda: ([Step(a, 9), Step(b, 5)], [a]),  # b's first chunk samples nothing
        lambda: ([decode(a), Step(b, 8), Step(c, 6)], [a, b]),  # chunk over cached context
        lambda: ([Step(c, 14), decode(b), decode(a)], [c, b, a]),
        lambda: ([decode(a), decode(c), decode(b)], [a, c, b]),  # decode-only path
        lambda: ([decode(c)], [c]),
    ]
    for make in plan:
        steps, sampled = make()
        logits = run_step(runner, pool, steps)
        assert logits.shape[0] == len(sampled)
        for row, seq in zip(logits, sampled, strict=True):
            want = expected[seq.request_id][seq.num_tokens - 1]
            torch.testing.assert_close(row, want, atol=1e-4, rtol=1e-4)


def test_step_without_finished_prefill_returns_no_rows(setup):
    model, _ = setup
    runner = ModelRunner(model, BLOCK_SIZE, NUM_BLOCKS, "cpu", torch.float32)
    seq = Sequence("a", tokens(6, 10), SamplingParams())
    logits = run_step(runner, BlockPool(), [Step(seq, 7)])
    assert logits.shape == (0, model.args.vocab_size)


def test_kv_sizing(setup):
    model, _ = setup
    args = model.args
    per_token = 2 * args.num_layers * args.num_kv_heads * args.head_dim
    assert ModelRunner.kv_bytes_per_token(model, torch.float32) == 4 * per_token
    assert kv_bytes_per_token(model.kv_cache_specs(), torch.bfloat16) == 2 * per_token
    budget = 10 * BLOCK_SIZE * 4 * per_token + 1
    assert num_blocks_for_budget(model, torch.float32, BLOCK_SIZE, budget) == 10
    runner = ModelRunner(model, BLOCK_SIZE, 10, "cpu", torch.bfloat16)
    assert len(runner.kv_caches) == args.num_layers
    k, v = runner.kv_caches[0]
    assert (
        k.shape == (10, BLOCK_SIZE, args.num_kv_heads, args.head_dim) and k.dtype == torch.bfloat16
    )


def test_cpu_bf16_detection_reads_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_fast_bf16(info)
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_has_fast_bf16(info)
    assert not cpu_has_fast_bf16(tmp_path / "absent")


def test_cpu_kv_pool_is_zero_and_resident_only_where_used():
    import psutil

    from localseek.engine.runner import zeroed_pool

    process = psutil.Process()
    before = process.memory_info().rss
    pool = zeroed_pool((4096, 16, 2, 256), torch.float32, torch.device("cpu"))  # 256 MiB
    assert process.memory_info().rss - before < (32 << 20)  # nothing written yet
    assert pool[7].abs().sum().item() == 0.0 and pool[4095].abs().sum().item() == 0.0
    pool[5] = 2.0
    assert pool[5].sum().item() == 2.0 * 16 * 2 * 256 and pool[6].abs().sum().item() == 0.0
