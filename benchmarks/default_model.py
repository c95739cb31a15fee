"""The embedded demo model (Gemma 3 270M Q4_K_M GGUF): localseek against transformers on the same
file, and against llama.cpp's `llama-server` when one is installed, in the same run.

For each concurrency level C (default 1, 16, 64), C requests with distinct prompts of
--prompt-tokens tokens each ask for exactly --output-tokens tokens (greedy, EOS ignored), all at
once. Reported: load time, aggregate output tokens/s, mean and max time to first token, and the
ratio of localseek's tokens/s to each peer's.

- localseek: the engine in this process (continuous batching over a paged KV cache).
- transformers: `from_pretrained(gguf_file=...)`, one padded `generate` batch of C; its TTFT is
  that batch's prefill plus one token (a `generate` with max_new_tokens=1).
- llama.cpp: `llama-server -m FILE -np C`, C concurrent streaming /completion requests over
  loopback (pass --llama-server PATH, or have it on PATH; skipped otherwise).

    python benchmarks/default_model.py
    python benchmarks/default_model.py --levels 1,16 --output-tokens 32 --skip-transformers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_prompts(tokenizer, n: int, length: int) -> list[list[int]]:
    """n distinct prompts of exactly `length` ids (BOS + text), so no prefix is shared."""
    prompts = []
    for i in range(n):
        text = f"Request {i}: " + "The quick brown fox jumps over the lazy dog. " * length
        prompts.append(tokenizer.encode(text)[:length])
    return prompts


def run_localseek(path: str, levels: list[int], prompt_len: int, out_len: int) -> dict:
    from localseek import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(path, dtype="float32", device="cpu", max_num_seqs=max(levels), show_progress=False)
    results = {"load_s": time.perf_counter() - t0}
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=out_len, ignore_eos=True)
    for level in levels:
        prompts = make_prompts(llm.tokenizer, level, prompt_len)
        start = time.perf_counter()
        first: dict[str, float] = {}
        tokens = 0
        for i, prompt in enumerate(prompts):
            engine.add_request(f"c{level}-{i}", prompt, params)
        while engine.has_unfinished():
            for out in engine.step():
                if out.delta_token_ids and out.request_id not in first:
                    first[out.request_id] = time.perf_counter() - start
                tokens += len(out.delta_token_ids)
        seconds = time.perf_counter() - start
        results[level] = _row(tokens, seconds, list(first.values()))
        print(f"  localseek C={level}: {results[level]}", flush=True)
    return results


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


def run_llama_cpp(
    binary: str, path: Path, levels: list[int], prompt_len: int, out_len: int
) -> dict:
    import httpx

    from localseek.weights.gguf import open_gguf

    tokenizer = open_gguf(path).tokenizer
    results: dict = {}
    for level in levels:
        port = _free_port()
        argv = [binary, "-m", str(path), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["-np", str(level), "-c", str(level * (prompt_len + out_len + 8))]
        t0 = time.perf_counter()
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_health(f"http://127.0.0.1:{port}/health", proc)
            results.setdefault("load_s", time.perf_counter() - t0)
            prompts = make_prompts(tokenizer, level, prompt_len)
            with httpx.Client(timeout=600) as client:  # warm-up, as localseek's first step is
                client.post(
                    f"http://127.0.0.1:{port}/completion",
                    json={"prompt": prompts[0], "n_predict": 1},
                )
            rows = asyncio.run(_llama_level(port, prompts, out_len))
            results[level] = rows
            print(f"  llama.cpp C={level}: {rows}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return results


async def _llama_level(port: int, prompts: list[list[int]], out_len: int) -> dict:
    import httpx

    body = {"n_predict": out_len, "ignore_eos": True, "temperature": 0, "stream": True}
    start = time.perf_counter()

    async def one(client: httpx.AsyncClient, prompt: list[int]) -> tuple[float, int]:
        first, tokens = None, 0
        url = f"http://127.0.0.1:{port}/completion"
        async with client.stream("POST", url, json={**body, "prompt": prompt}) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event.get("content") or event.get("tokens"):
                    first = first or time.perf_counter() - start
                    tokens += max(1, len(event.get("tokens") or []))
        return first or 0.0, tokens

    async with httpx.AsyncClient(timeout=600) as client:
        done = await asyncio.gather(*(one(client, p) for p in prompts))
    seconds = time.perf_counter() - start
    return _row(sum(t for _, t in done), seconds, [f for f, _ in done])


def _row(tokens: int, seconds: float, ttfts: list[float]) -> dict:
    return {
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(tokens / seconds, 1),
        "ttft_mean_s": round(sum(ttfts) / max(1, len(ttfts)), 3),
        "ttft_max_s": round(max(ttfts, default=0.0), 3),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama-server not healthy after {timeout} s")


def print_table(results: dict[str, dict], levels: list[int]) -> None:
    print("\n| engine | load s | " + " | ".join(f"C={c} tok/s (TTFT mean)" for c in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for name, res in results.items():
        cells = [
            f"{res[c]['tok_s']} ({res[c]['ttft_mean_s']} s)" if c in res else "-" for c in levels
        ]
        print(f"| {name} | {res.get('load_s', 0):.1f} | " + " | ".join(cells) + " |")
    ours = results["localseek"]
    for name, res in results.items():
        if name == "localseek":
            continue
        ratios = [f"C={c}: {ours[c]['tok_s'] / res[c]['tok_s']:.2f}x" for c in levels if c in res]
        print(f"localseek / {name} tokens/s: " + ", ".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    from localseek.weights.default_model import default_model_path

    path = Path(default_model_path())
    print(f"model: {path}; torch threads {torch.get_num_threads()}", flush=True)
    results = {
        "localseek": run_localseek(str(path), levels, args.prompt_tokens, args.output_tokens)
    }
    if not args.skip_transformers:
        results["transformers"] = run_transformers(
            path, levels, args.prompt_tokens, args.output_tokens
        )
    if args.llama_server:
        results["llama.cpp"] = run_llama_cpp(
            args.llama_server, path, levels, args.prompt_tokens, args.output_tokens
        )
    else:
        print("llama-server not found (pass --llama-server PATH): llama.cpp skipped")
    print_table(results, levels)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
