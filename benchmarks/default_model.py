"""The embedded demo model (Gemma 3 270M Q4_K_M GGUF): localseek against transformers on the same
file, and against llama.cpp's `llama-server` when one is installed, in the same run.

For each concurrency level C (default 1, 16, 64), C requests with distinct prompts of
--prompt-tokens tokens each ask for exactly --output-tokens tokens (greedy, EOS ignored), all at
once. Reported: load time, aggregate output tokens/s, mean and max time to first token, and the
ratio of localseek's tokens/s to each peer's.

- localseek serve: `python -m localseek serve FILE` as a subprocess, driven over loopback by the
  same client code as llama.cpp (streaming /v1/completions, token-id prompts, ignore_eos).
- llama.cpp: `llama-server -m FILE -np MAX(C) -c ...` (one slot per request at the top level),
  the same client (pass --llama-server PATH or set $LLAMA_SERVER; skipped otherwise).
- localseek engine: the engine in this process (continuous batching over a paged KV cache).
- transformers: `from_pretrained(gguf_file=...)`, one padded `generate` batch of C; its TTFT is
  that batch's prefill plus one token (a `generate` with max_new_tokens=1).

Server load time is from process start to /health answering 200. With --repeat N every level
runs N times per engine (fresh prompts each time) and the run with the median tokens/s is
reported, with all N figures under "runs": on a shared machine one run can be off by 2x.
With --interleave every engine is loaded first and the engines take turns run by run, so load
from other processes falls on all of them alike (transformers, slow to run, is never interleaved).

    python benchmarks/default_model.py
    python benchmarks/default_model.py --levels 1,16 --output-tokens 32 --skip-transformers
    LLAMA_SERVER=/path/to/llama-server python benchmarks/default_model.py --output-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from load_level import run_level
from prompts import make_prompts
from server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class EngineRow:
    """The localseek engine in this process (continuous batching, no HTTP)."""

    def __init__(self, path: str, levels: list[int], args, quantization: str = "none"):
        self.path, self.max_seqs, self.args = path, max(levels), args
        self.quantization = quantization

    def start(self) -> float:
        from localseek import LLM, SamplingParams

        t0 = time.perf_counter()
        self.llm = LLM(
            self.path,
            dtype=self.args.dtype,
            device="cpu",
            max_num_seqs=self.max_seqs,
            quantization=self.quantization,
            show_progress=False,
        )
        load_s = time.perf_counter() - t0
        self.params = SamplingParams(
            temperature=0, max_tokens=self.args.output_tokens, ignore_eos=True
        )
        self.run(1, "w")  # warm-up, as the servers get (the first forward is slower)
        return load_s

    def run(self, level: int, tag: str) -> dict:
        engine = self.llm.engine
        prompts = make_prompts(self.llm.tokenizer, level, self.args.prompt_tokens, tag)
        start = time.perf_counter()
        first: dict[str, float] = {}
        tokens = 0
        for i, prompt in enumerate(prompts):
            engine.add_request(f"{tag}-{i}", prompt, self.params)
        while engine.has_unfinished():
            for out in engine.step():
                if out.delta_token_ids and out.request_id not in first:
                    first[out.request_id] = time.perf_counter() - start
                tokens += len(out.delta_token_ids)
        return _row(tokens, time.perf_counter() - start, list(first.values()))

    def close(self) -> None:
        self.llm = None


def run_transformers(path: Path, levels: list[int], prompt_len: int, out_len: int) -> dict:
    from transformers import AutoModelForCausalLM

    from localseek.weights.gguf import open_gguf

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    results = {"load_s": time.perf_counter() - t0}
    tokenizer = open_gguf(path).tokenizer
    for level in levels:
        ids = torch.tensor(make_prompts(tokenizer, level, prompt_len))  # equal lengths: no pad
        kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        with torch.inference_mode():
            start = time.perf_counter()
            model.generate(input_ids=ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
            ttft = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(input_ids=ids, max_new_tokens=out_len, min_new_tokens=out_len, **kwargs)
            seconds = time.perf_counter() - start
        results[level] = _row(level * out_len, seconds, [ttft] * level)
        print(f"  transformers C={level}: {results[level]}", flush=True)
    return results


class ServerRow:
    """A server subprocess (`argv` gets --port appended) driven over loopback."""

    def __init__(self, argv: list[str], env: dict | None, path: Path, args):
        from localseek.weights.gguf import open_gguf

        self.server, self.args = ServerProcess(argv, env), args
        self.tokenizer = open_gguf(path).tokenizer

    def start(self) -> float:
        load_s = self.server.start()
        # Warm-up (both engines' first forward is slower), with a prompt no level reuses.
        self.run(1, "w", out_len=1)
        return load_s

    def run(self, level: int, tag: str, out_len: int | None = None) -> dict:
        prompts = make_prompts(self.tokenizer, level, self.args.prompt_tokens, tag)
        out_len = self.args.output_tokens if out_len is None else out_len
        done = run_level(self.server.base, prompts, out_len)
        return _row(done.tokens, done.seconds, list(done.ttfts))

    def close(self) -> None:
        self.server.close()


def measure(rows: dict, levels: list[int], repeat: int, interleave: bool) -> dict[str, dict]:
    """Each row's load time and, per level, the median of `repeat` runs.

    Interleaved, every row is loaded first and then each repetition runs every level on every
    row in turn, so a burst of load from another process hits all rows alike.
    """
    results: dict[str, dict] = {name: {} for name in rows}
    runs: dict[tuple[str, int], list[dict]] = {}

    def one(name: str, level: int, r: int) -> None:
        runs.setdefault((name, level), []).append(rows[name].run(level, f"{name}{level}.{r}"))
        if len(runs[name, level]) == repeat:
            results[name][level] = _median_run(runs[name, level])
            print(f"  {name} C={level}: {results[name][level]}", flush=True)

    try:
        if interleave:
            for name, row in rows.items():
                results[name]["load_s"] = row.start()
            for r in range(repeat):
                for level in levels:
                    for name in rows:
                        one(name, level, r)
        else:
            for name, row in rows.items():
                results[name]["load_s"] = row.start()
                for level in levels:
                    for r in range(repeat):
                        one(name, level, r)
                row.close()
    finally:
        for row in rows.values():
            row.close()
    return results


def localseek_argv(
    path: Path, levels: list[int], dtype: str, quantization: str = "none"
) -> tuple[list[str], dict]:
    argv = [sys.executable, "-m", "localseek", "--log-level", "WARNING", "serve", str(path)]
    argv += ["--dtype", dtype, "--device", "cpu", "--max-num-seqs", str(max(levels))]
    argv += ["--quantization", quantization]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return argv + ["--host", "127.0.0.1"], env


def llama_argv(binary: str, path: Path, levels: list[int], args) -> list[str]:
    slots = max(levels)
    # Explicit -np gives each slot its own KV of ctx/slots tokens (no unified KV).
    ctx = slots * (args.prompt_tokens + args.output_tokens + 16)
    argv = [binary, "-m", str(path), "--host", "127.0.0.1", "-np", str(slots), "-c", str(ctx)]
    return argv + shlex.split(args.llama_args)


def _row(tokens: int, seconds: float, ttfts: list[float]) -> dict:
    return {
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(tokens / seconds, 1),
        "ttft_mean_s": round(sum(ttfts) / max(1, len(ttfts)), 3),
        "ttft_max_s": round(max(ttfts, default=0.0), 3),
    }


def _median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (the lower middle one for even N), plus every figure."""
    ordered = sorted(runs, key=lambda row: row["tok_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        median["runs"] = [row["tok_s"] for row in runs]
    median["load"] = round(os.getloadavg()[0], 2)  # 1-minute load average after the level
    return median


def print_table(results: dict[str, dict], levels: list[int]) -> None:
    print(
        "\n| engine | load s | "
        + " | ".join(f"C={c} tok/s (TTFT mean / max)" for c in levels)
        + " |"
    )
    print("|---|---|" + "---|" * len(levels))
    for name, res in results.items():
        cells = [
            f"{res[c]['tok_s']} ({res[c]['ttft_mean_s']} / {res[c]['ttft_max_s']} s)"
            if c in res
            else "-"
            for c in levels
        ]
        print(f"| {name} | {res.get('load_s', 0):.1f} | " + " | ".join(cells) + " |")
    print()
    for ours in [name for name in results if name.startswith("localseek")]:
        for peer in ("llama.cpp", "transformers"):
            if ours not in results or peer not in results:
                continue
            ratios = [
                f"C={c}: {results[ours][c]['tok_s'] / results[peer][c]['tok_s']:.2f}x"
                for c in levels
                if c in results[ours] and c in results[peer]
            ]
            print(f"{ours} / {peer} tokens/s: " + ", ".join(ratios))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per level and engine; the median is reported"
    )
    parser.add_argument(
        "--dtype", default="auto", help="localseek dtype, both rows (auto: bf16 on AVX512-BF16)"
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="load every engine first, then alternate them run by run (fairer on a busy machine)",
    )
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-engine", action="store_true", help="no in-process localseek row")
    parser.add_argument("--skip-serve", action="store_true", help="no `localseek serve` row")
    parser.add_argument(
        "--llama-server",
        default=os.environ.get("LLAMA_SERVER") or shutil.which("llama-server"),
        help="llama.cpp's llama-server binary (default: $LLAMA_SERVER, then PATH)",
    )
    parser.add_argument(
        "--llama-args", default="", help="extra llama-server flags, e.g. '--no-repack'"
    )
    parser.add_argument(
        "--quantization",
        default="none",
        help="comma-separated localseek --quantization methods, one serve/engine row each",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be >= 1, got {args.repeat}")
    levels = [int(x) for x in args.levels.split(",")]

    from localseek.weights.default_model import default_model_path

    path = Path(default_model_path())
    print(f"model: {path}; torch threads {torch.get_num_threads()}", flush=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows: dict = {}
    methods = args.quantization.split(",")

    def name(kind: str, method: str) -> str:
        return f"localseek {kind}" + ("" if method == "none" else f" {method}")

    for method in methods if not args.skip_serve else []:
        argv, env = localseek_argv(path, levels, args.dtype, method)
        rows[name("serve", method)] = ServerRow(argv, env, path, args)
    if args.llama_server:
        argv = llama_argv(args.llama_server, path, levels, args)
        print(f"llama.cpp: {shlex.join(argv)}", flush=True)
        rows["llama.cpp"] = ServerRow(argv, None, path, args)
    else:
        print("llama-server not given (--llama-server PATH or $LLAMA_SERVER): llama.cpp skipped")
    for method in methods if not args.skip_engine else []:
        rows[name("engine", method)] = EngineRow(str(path), levels, args, method)
    results = measure(rows, levels, args.repeat, args.interleave)
    if not args.skip_transformers:
        results["transformers"] = run_transformers(
            path, levels, args.prompt_tokens, args.output_tokens
        )
    print(f"load average at end: {os.getloadavg()}", flush=True)
    print_table(results, levels)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
