"""Decode speed by weight quantization: ms per engine step at batch 1 / 16 / 64, same run.

Every method's engine is loaded once into this process (the demo model by default). For each
batch size, each engine prefills the same prompts, then decode steps are timed in rounds that
interleave the methods, so a noisy shared machine slows all of them alike; the table gives the
median round per method and its ratio to `none`.

    python benchmarks/quantization.py                        # none vs int8 vs int4, demo model
    python benchmarks/quantization.py --batches 1,16 --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from localseek import LLM, SamplingParams


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded demo model")
    p.add_argument("--methods", default="none,int8,int4")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="decode steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p.parse_args()


def _start(llm: LLM, batch: int, prompt_tokens: int, budget: int) -> None:
    """Queue `batch` requests and step until every one is decoding."""
    params = SamplingParams(temperature=0.0, max_tokens=budget, ignore_eos=True)
    for i in range(batch):
        prompt = [2] + [(1000 + 37 * i + 11 * j) % 200_000 + 100 for j in range(prompt_tokens)]
        llm.engine.add_request(f"b{batch}-{i}", prompt, params)
    started: set[str] = set()
    while len(started) < batch:
        started.update(out.request_id for out in llm.engine.step())


def _time_steps(llm: LLM, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        llm.engine.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    budget = args.steps * (args.rounds + 1) + 8
    tokens = max(batches) * (args.prompt_tokens + budget + 32)
    llms = {
        m: LLM(
            args.model,
            quantization=m,
            max_num_seqs=max(batches),
            kv_cache_tokens=tokens,
            show_progress=False,
        )
        for m in methods
    }
    print(f"torch threads: {torch.get_num_threads()}")
    rows = []
    for batch in batches:
        for llm in llms.values():
            _start(llm, batch, args.prompt_tokens, budget)
            _time_steps(llm, 2)  # warm-up
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.rounds):
            for m, llm in llms.items():
                times[m].append(_time_steps(llm, args.steps))
        for llm in llms.values():
            llm.engine.abort(llm.engine.unfinished_request_ids())
        base = statistics.median(times[methods[0]])
        for m in methods:
            ms = statistics.median(times[m])
            rows.append((batch, m, ms, min(times[m]), batch * 1000 / ms, base / ms))
    print(f"{'batch':>5} {'method':>7} {'ms/step':>8} {'best':>7} {'tok/s':>7} {'speedup':>8}")
    for batch, m, ms, best, tps, ratio in rows:
        print(f"{batch:>5} {m:>7} {ms:>8.1f} {best:>7.1f} {tps:>7.1f} {ratio:>7.2f}x")


if __name__ == "__main__":
    main()
