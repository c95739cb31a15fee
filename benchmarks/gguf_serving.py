"""Any GGUF file served by `localseek serve` and by llama.cpp's `llama-server`, measured alike.

Both servers get the same file, the same threads (OMP_NUM_THREADS for localseek, -t/-tb for
llama.cpp), the same KV room (--max-num-seqs S --max-model-len N --kv-cache-tokens S*N against
-np S -c S*N, S the highest level), the same client (sse_client.py: streaming
/v1/completions with token-id prompts), the same prompts and exactly --output-tokens tokens per
request (greedy unless --temperature, ignore_eos). Per round, each concurrency level C sends C
requests at once to one server, then the other; the order of the servers flips every round, so
drift on a shared machine hits both. Also per round: one request with a fresh
--long-prompt-token prompt and max_tokens 1, whose prompt tokens / time to first token is the
prompt speed.

Reported per server: output tok/s at each C (median of rounds), TTFT p50 (all requests of all
rounds), prompt tok/s, load time and peak resident memory of the process tree (psutil) while
serving and while loading; the ratio localseek / llama.cpp of each; the CPU's kernel flags,
this checkout's commit and llama-server's version. A markdown table goes to stdout, everything
to --json.

    python benchmarks/gguf_serving.py /work/models/r1-1.5b-q4_k_m.gguf \\
        --llama-server /work/llama/bin/llama-server --levels 1,16,64 --rounds 2
    python benchmarks/gguf_serving.py FILE --localseek-args '--quantization int8' \\
        --localseek-args '' --levels 1,4 --output-tokens 8 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gguf_serving_report import markdown_table, summarize
from host_info import binary_version, cpu_info, repo_commit
from load_level import LevelRun, run_level
from prompts import make_prompts
from server_process import Memory, ServerProcess

ROOT = Path(__file__).resolve().parents[1]
LLAMA = "llama.cpp"


@dataclass
class Contender:
    """One server under test and everything measured on it."""

    name: str
    argv: list[str]
    env: dict | None = None
    server: ServerProcess | None = None
    load_s: float = 0.0
    load_peak: Memory = field(default_factory=Memory)
    serve_peak: Memory = field(default_factory=Memory)
    levels: dict[int, list[LevelRun]] = field(default_factory=dict)
    prompt_runs: list[LevelRun] = field(default_factory=list)

    def start(self, tokenizer, prompt_tokens: int, levels: list[int]) -> None:
        print(f"starting {self.name}: {shlex.join(self.argv)}", flush=True)
        self.server = ServerProcess(self.argv, self.env)
        self.load_s = self.server.start()
        # Warm-up, unmeasured: llama-server's first requests after start, and its first at
        # each new concurrency, were up to 20x slower to the first token (3-6 s against 0.2-0.3 s
        # for a 32-token prompt on the demo model). Two single requests, then every level once.
        for tag, level in (("w0 ", 1), ("w1 ", 1), *((f"w{c} ", c) for c in levels)):
            run_level(self.server.base, make_prompts(tokenizer, level, prompt_tokens, tag), 4)
        self.load_peak = self.server.rss.take_peak()
        print(
            f"  {self.name} ready in {self.load_s:.1f} s, peak RSS while loading "
            f"{self.load_peak.rss / 1e9:.2f} GB ({self.load_peak.anon / 1e9:.2f} GB not "
            "file-backed)",
            flush=True,
        )

    def stop(self) -> None:
        if self.server is not None and self.server.proc is not None:
            self.serve_peak = self.serve_peak.max(self.server.rss.take_peak())
            self.server.close()


def localseek_argv(
    model: Path, slots: int, context: int, threads: int, extra: str
) -> tuple[list[str], dict]:
    argv = [sys.executable, "-m", "localseek", "--log-level", "WARNING", "serve", str(model)]
    argv += ["--host", "127.0.0.1", "--device", "cpu", "--max-num-seqs", str(slots)]
    argv += ["--max-model-len", str(context), "--kv-cache-tokens", str(slots * context)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    return argv + shlex.split(extra), env


def llama_argv(
    binary: str, model: Path, slots: int, context: int, threads: int, extra: str
) -> list[str]:
    # Explicit -np gives each slot its own ctx/slots tokens of KV, as localseek's pool holds.
    argv = [binary, "-m", str(model), "--host", "127.0.0.1", "-t", str(threads)]
    argv += ["-tb", str(threads), "-np", str(slots), "-c", str(slots * context)]
    return argv + shlex.split(extra)


def build_contenders(args: argparse.Namespace, slots: int, context: int) -> list[Contender]:
    contenders = []
    for extra in args.localseek_args or [""]:
        name = "localseek" + (f" {extra.strip()}" if extra.strip() else "")
        argv, env = localseek_argv(args.model, slots, context, args.threads, extra)
        contenders.append(Contender(name, argv, env))
    if args.llama_server:
        argv = llama_argv(
            args.llama_server, args.model, slots, context, args.threads, args.llama_args
        )
        contenders.append(Contender(LLAMA, argv))
    else:
        print("llama-server not found (--llama-server PATH or $LLAMA_SERVER): llama.cpp skipped")
    return contenders


def measure_round(contenders: list[Contender], tokenizer, args, r: int) -> None:
    """Every level, then the long prompt, on each server in turn; order flips each round."""
    order = contenders if r % 2 == 0 else contenders[::-1]
    for level in args.levels:
        prompts = make_prompts(tokenizer, level, args.prompt_tokens, f"r{r}c{level}-")
        for c in order:
            done = run_level(c.server.base, prompts, args.output_tokens, args.temperature)
            c.levels.setdefault(level, []).append(done)
            _check_lengths(c.name, level, done, args.output_tokens)
            print(
                f"  [round {r + 1}/{args.rounds}] {c.name} C={level}: {done.tok_s:.1f} tok/s, "
                f"TTFT p50 {done.ttft_p50:.2f} s, {done.seconds:.1f} s, "
                f"load avg {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    if args.long_prompt:
        prompt = make_prompts(tokenizer, 1, args.long_prompt, f"long r{r}-")
        for c in order:
            done = run_level(c.server.base, prompt, 1)
            c.prompt_runs.append(done)
            print(
                f"  [round {r + 1}/{args.rounds}] {c.name} {len(prompt[0])}-token prompt: "
                f"{len(prompt[0]) / done.ttft_p50:.1f} tok/s",
                flush=True,
            )


def _check_lengths(name: str, level: int, done: LevelRun, out_len: int) -> None:
    short = [n for n in done.tokens_per_request if n != out_len]
    if short:
        print(
            f"  WARNING: {name} C={level}: {len(short)} requests returned {sorted(set(short))} "
            f"tokens, not {out_len}: the comparison is not like for like",
            flush=True,
        )


def run(args: argparse.Namespace) -> dict:
    from localseek.weights.gguf import open_gguf

    slots = max(args.levels)
    context = args.context or max(args.prompt_tokens, args.long_prompt) + args.output_tokens + 16
    print(f"reading the tokenizer of {args.model}", flush=True)
    tokenizer = open_gguf(args.model).tokenizer
    contenders = build_contenders(args, slots, context)
    host = {
        "cpu": cpu_info(),
        "localseek_commit": repo_commit(ROOT),
        "llama_server_version": binary_version([args.llama_server]) if args.llama_server else None,
        "load_average_start": os.getloadavg(),
    }
    print(f"host: {json.dumps(host)}", flush=True)
    started = time.monotonic()
    try:
        groups = [contenders] if not args.one_at_a_time else [[c] for c in contenders]
        for group in groups:
            for c in group:
                c.start(tokenizer, args.prompt_tokens, args.levels)
            for r in range(args.rounds):
                measure_round(group, tokenizer, args, r)
            for c in group:
                c.stop()
    finally:
        for c in contenders:
            c.stop()
    host["load_average_end"] = os.getloadavg()
    settings = {
        "model": str(args.model),
        "file_bytes": args.model.stat().st_size,
        "threads": args.threads,
        "slots": slots,
        "context_per_slot": context,
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "temperature": args.temperature,
        "long_prompt_tokens": args.long_prompt,
        "rounds": args.rounds,
        "levels": args.levels,
        "interleaved": not args.one_at_a_time,
        "seconds": round(time.monotonic() - started, 1),
    }
    return summarize(contenders, args.levels, settings, host, reference=LLAMA)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the GGUF file both servers load")
    parser.add_argument("--levels", default="1,16,64", help="concurrency levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; medians are reported")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=64, help="per request, exactly")
    parser.add_argument(
        "--long-prompt", type=int, default=512, help="prompt-speed request length (0: skip)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sample at this temperature (default 0: greedy); each server keeps its own "
        "defaults for the rest, as a client that sends only a temperature gets",
    )
    parser.add_argument("--threads", type=int, default=2, help="compute threads, both servers")
    parser.add_argument(
        "--context",
        type=int,
        default=0,
        help="KV tokens per slot, both servers (default: longest prompt + output + 16)",
    )
    parser.add_argument(
        "--llama-server",
        default=os.environ.get("LLAMA_SERVER") or shutil.which("llama-server"),
        help="llama.cpp's llama-server (default: $LLAMA_SERVER, then PATH)",
    )
    parser.add_argument("--llama-args", default="", help="extra llama-server flags")
    parser.add_argument(
        "--localseek-args",
        action="append",
        help="extra `localseek serve` flags, e.g. '--quantization int8'; repeat for one "
        "localseek row per value ('' for the defaults)",
    )
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="run the servers one after the other, not side by side (when both do not fit in "
        "memory; not interleaved then)",
    )
    parser.add_argument(
        "--json", type=Path, help="results file (default: ./gguf-serving-STEM.json)"
    )
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    if not args.model.is_file():
        parser.error(f"no such GGUF file: {args.model}")
    if args.rounds < 1 or min(args.levels) < 1 or args.output_tokens < 1:
        parser.error("--rounds, --levels and --output-tokens must be >= 1")
    if args.llama_server and not shutil.which(args.llama_server):
        parser.error(f"--llama-server {args.llama_server} is not an executable")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print()
    print(markdown_table(results))
    out = args.json or Path(f"gguf-serving-{args.model.stem}.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
