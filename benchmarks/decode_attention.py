"""Decode attention per layer call: the native kernel (each variant this CPU runs) against the
torch path, through `models.attention.paged_attention` as the model calls it, same process.

Each shape is one decode step of S sequences with T cached tokens each, K/V in a paged pool
with scattered blocks; the paths alternate round by round and the medians are reported, with
the CPU flags the run had. The default head layout is DeepSeek-R1-Distill-Qwen-1.5B's (12
query heads on 2 KV heads of 128). The torch path is what runs where no kernel can be had
(`models.attention.decode_attention_kernel` returning None).

    python benchmarks/decode_attention.py                       # 16 x 512 and 1 x 4096
    python benchmarks/decode_attention.py --shapes 64x256 --dtype bfloat16 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import localseek.models.attention as attention  # noqa: E402
from localseek.kernels import build  # noqa: E402
from localseek.kernels.cpu_features import describe  # noqa: E402
from localseek.kernels.paged_attention import decode_attention_kernel  # noqa: E402

BLOCK_SIZE = 16
CPU_DECODE_GROUP_BYTES = 1 << 20  # what engine/runner.py hands the CPU path


def decode_step(seqs: int, tokens: int, args: argparse.Namespace):
    """(q, k_cache, v_cache, metadata) for one decode step of `seqs` x `tokens`."""
    gen = torch.Generator().manual_seed(seqs * tokens)
    dtype = getattr(torch, args.dtype)
    per_seq = -(-tokens // BLOCK_SIZE)
    num_blocks = seqs * per_seq + 1  # block 0 stays the null block, as in the engine
    shape = (num_blocks, BLOCK_SIZE, args.kv_heads, args.head_dim)
    k_cache = torch.randn(shape, generator=gen).to(dtype)
    v_cache = torch.randn(shape, generator=gen).to(dtype)
    order = (torch.randperm(num_blocks - 1, generator=gen) + 1).view(seqs, per_seq)
    meta = attention.AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.int64),
        block_tables=order.to(torch.int32),
        context_lens=torch.full((seqs,), tokens, dtype=torch.int32),
        query_start_loc=torch.arange(seqs + 1, dtype=torch.int32),
        query_lens_list=[1] * seqs,
        context_lens_list=[tokens] * seqs,
        block_size=BLOCK_SIZE,
        max_context_len=tokens,
        is_decode_only=True,
        workspace=attention.AttentionWorkspace(),
        decode_group_bytes=CPU_DECODE_GROUP_BYTES,
    )
    q = torch.randn(seqs, args.q_heads, args.head_dim, generator=gen).to(dtype)
    return q, k_cache, v_cache, meta


def time_calls(step, kernel, calls: int) -> float:
    """Median ms of `calls` layer calls with `kernel` (None: the torch path)."""
    q, k_cache, v_cache, meta = step
    attention.decode_attention_kernel = lambda: kernel
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        attention.paged_attention(q, k_cache, v_cache, meta)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="16x512,1x4096", help="SEQSxTOKENS,...")
    p.add_argument("--q-heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20, help="layer calls timed per round")
    p.add_argument("--threads", type=int, default=None, help="default: torch's")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the kernels share torch's OpenMP threads
    paths: dict[str, object] = {"torch": None}
    for variant in build.runnable_variants("paged_decode_attention"):
        kernel = decode_attention_kernel(variant.name)
        if kernel is not None:
            paths[variant.name] = kernel
    print(f"CPU flags: {describe()}; {torch.get_num_threads()} threads; {args.dtype}")
    print(f"heads {args.q_heads}/{args.kv_heads} x {args.head_dim}; ms per layer call, medians")
    print(f"{'shape':>10} " + " ".join(f"{name:>9}" for name in paths) + "  torch/best")
    for shape in args.shapes.split(","):
        seqs, tokens = (int(n) for n in shape.lower().split("x"))
        step = decode_step(seqs, tokens, args)
        for kernel in paths.values():  # warm-up: builds, memoized metadata, page faults
            time_calls(step, kernel, 2)
        rounds: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, kernel in paths.items():
                rounds[name].append(time_calls(step, kernel, args.calls))
        medians = {name: statistics.median(ms) for name, ms in rounds.items()}
        best = min(v for name, v in medians.items() if name != "torch") if len(paths) > 1 else 0
        ratio = f"{medians['torch'] / best:>10.2f}x" if best else "  (no kernel)"
        cells = " ".join(f"{medians[name]:>9.3f}" for name in paths)
        print(f"{shape:>10} {cells} {ratio}", flush=True)


if __name__ == "__main__":
    main()
