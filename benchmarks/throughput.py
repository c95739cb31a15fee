"""Offline throughput: localseek's engine against transformers' batched `generate`, same run.

The workload is 64 requests with prompt lengths 16-512 and output lengths 16-256 drawn from a
fixed seed, run through both on the same random-weight model. transformers is used the way a
user without an engine would: one padded batch, `max_new_tokens` = the longest requested output,
each request's tokens beyond its own limit thrown away. Both count only requested tokens.

    python benchmarks/throughput.py                  # Qwen2-shaped random model (default)
    python benchmarks/throughput.py --arch deepseek_v3
    python benchmarks/throughput.py --requests 16 --hf-dtype float32   # quicker, one HF row

localseek runs at its default dtype ("auto": bf16 on CPUs with native bf16, else fp32);
transformers runs at float32 (its default, what a user gets) and at bfloat16, one row each.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))

ARCH_SHAPES = {
    # ~60M parameters: big enough that matmuls dominate, small enough for a 2-core CPU.
    "qwen2": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
}


# A tiny-but-not-trivial DeepSeek-V3 shape: MLA, 32 routed experts (4 active), group routing.
V3_SHAPE = dict(
    hidden_size=512,
    intermediate_size=1024,
    moe_intermediate_size=256,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=8,
    n_routed_experts=32,
    n_shared_experts=1,
    num_experts_per_tok=4,
    n_group=4,
    topk_group=2,
    first_k_dense_replace=1,
    kv_lora_rank=128,
    q_lora_rank=192,
    qk_nope_head_dim=32,
    qk_rope_head_dim=16,
    v_head_dim=32,
    vocab_size=32000,
    max_position_embeddings=2048,
)


def build_model(arch: str, directory: Path) -> Path:
    if arch == "deepseek_v3":
        from tiny_deepseek import make_tiny_deepseek

        return make_tiny_deepseek(directory, "v3", with_tokenizer=True, **V3_SHAPE)
    from tiny_models import make_tiny_model

    return make_tiny_model(directory, arch, **ARCH_SHAPES.get(arch, {}))


def make_workload(n: int, seed: int, vocab: int) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(16, 512))] for _ in range(n)]
    outputs = [rng.randint(16, 256) for _ in range(n)]
    return prompts, outputs


def run_localseek(model_dir: Path, prompts, out_lens, dtype: str) -> dict:
    from localseek import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(str(model_dir), dtype=dtype, device="cpu", show_progress=False)
    load_s = time.perf_counter() - t0
    engine = llm.engine
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in out_lens]
    for i, (p, sp) in enumerate(zip(prompts, params)):
        engine.add_request(f"bench-{i}", p, sp)
    peak_blocks = 0
    generated = 0
    t0 = time.perf_counter()
    last_print = t0
    done = 0
    while engine.has_unfinished():
        for out in engine.step():
            generated += len(out.delta_token_ids)
            done += out.finished
        bm = engine.block_manager
        peak_blocks = max(peak_blocks, bm.num_total_blocks - bm.num_free_blocks())
        if time.perf_counter() - last_print > 5:
            last_print = time.perf_counter()
            rate = generated / (last_print - t0)
            print(
                f"  localseek: {done}/{len(prompts)} done, {generated} tokens, {rate:.1f} tok/s",
                flush=True,
            )
    seconds = time.perf_counter() - t0
    from localseek.engine.runner import ModelRunner

    bytes_per_token = ModelRunner.kv_bytes_per_token(engine.runner.model, engine.runner.dtype)
    return {
        "dtype": str(engine.runner.dtype).removeprefix("torch."),
        "seconds": seconds,
        "tokens": generated,
        "load_s": load_s,
        "peak_kv_bytes": peak_blocks * engine.block_manager.block_size * bytes_per_token,
        "bytes_per_token": bytes_per_token,
        "max_model_len": engine.max_model_len,
    }


def run_transformers(model_dir: Path, prompts, out_lens, dtype: str, batch_size: int) -> dict:
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    useful = 0
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        lens = out_lens[start : start + batch_size]
        width = max(len(p) for p in batch)
        # Left padding, as decoder-only batched generation requires.
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(lens),
                min_new_tokens=max(lens),
                do_sample=False,
            )
        useful += sum(lens)
        print(f"  transformers: {start + len(batch)}/{len(prompts)} done", flush=True)
    return {"seconds": time.perf_counter() - t0, "tokens": useful}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen2")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="localseek's dtype (default: auto)")
    parser.add_argument(
        "--hf-dtype",
        default="float32,bfloat16",
        help="comma-separated dtypes to run transformers at, one row each",
    )
    parser.add_argument("--hf-batch-size", type=int, default=64)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for both engines (default: torch's choice, one per core)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(args.arch, Path(tmp))
        import json

        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        prompts, out_lens = make_workload(args.requests, args.seed, vocab)
        print(
            f"workload: {len(prompts)} requests, {sum(map(len, prompts))} prompt tokens, "
            f"{sum(out_lens)} output tokens; torch threads {torch.get_num_threads()}"
        )
        ls = run_localseek(model_dir, prompts, out_lens, args.dtype)
        hf_dtypes = [] if args.skip_transformers else args.hf_dtype.split(",")
        hf = {
            dtype: run_transformers(model_dir, prompts, out_lens, dtype, args.hf_batch_size)
            for dtype in hf_dtypes
        }

    ls_rate = ls["tokens"] / ls["seconds"]
    print()
    print("| engine | dtype | output tokens | seconds | tokens/s |")
    print("|---|---|---|---|---|")
    print(f"| localseek | {ls['dtype']} | {ls['tokens']} | {ls['seconds']:.1f} | {ls_rate:.1f} |")
    for dtype, result in hf.items():
        print(
            f"| transformers generate (padded batch of {args.hf_batch_size}) | {dtype} | "
            f"{result['tokens']} | {result['seconds']:.1f} | "
            f"{result['tokens'] / result['seconds']:.1f} |"
        )
    if hf:
        print()
    for dtype, result in hf.items():
        hf_rate = result["tokens"] / result["seconds"]
        print(f"ratio localseek / transformers {dtype}: {ls_rate / hf_rate:.2f}x")
    bpt = ls["bytes_per_token"]
    prealloc = len(prompts) * ls["max_model_len"] * bpt
    padded = len(prompts) * (max(map(len, prompts)) + max(out_lens)) * bpt
    print(f"\nKV bytes per token: {bpt}")
    print(f"KV memory, paged peak:                      {ls['peak_kv_bytes'] / 2**20:8.1f} MiB")
    print(
        f"KV memory, max_model_len per sequence:      {prealloc / 2**20:8.1f} MiB "
        f"(paged saves {100 * (1 - ls['peak_kv_bytes'] / prealloc):.0f}%)"
    )
    print(
        f"KV memory, padded batch (longest prompt+output): {padded / 2**20:8.1f} MiB "
        f"(paged saves {100 * (1 - ls['peak_kv_bytes'] / padded):.0f}%)"
    )


if __name__ == "__main__":
    main()
