"""Serving under load: `localseek serve` against a naive FastAPI + thread-pool server, same run.

Both servers load the same model and run in their own processes; this script is the client.
First it measures localseek's capacity (requests/s with every engine slot busy), then it offers
open-loop Poisson load at multiples of that capacity, each design in turn, and reports TTFT,
TPOT and end-to-end latency percentiles, throughput, goodput (requests finished within the
SLO, per second) and errors by kind. `--burst N` adds one burst of N simultaneous requests.
The peer (benchmarks/naive_server.py) is restarted for every level: it cannot cancel work, so
the backlog of one level would otherwise bleed into the next.

    python benchmarks/serving.py                                  # full sweep, random model
    python benchmarks/serving.py --loads 1,10 --duration 10 --burst 200
    python benchmarks/serving.py --model /models/DeepSeek-R1-Distill-Qwen-1.5B

Writes results.json, table.md and serving.png into --out-dir (default bench-out/serving).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Big enough that the forward pass, not Python, dominates a step; small enough for 2 CPU cores.
MODEL_SHAPE = dict(
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)


@dataclass
class Result:
    kind: str  # ok | 429 | 4xx | 5xx | timeout | connection
    e2e: float | None = None
    ttft: float | None = None
    tpot: float | None = None
    tokens: int = 0


# ---- one request ---------------------------------------------------------------------------


async def localseek_request(client: httpx.AsyncClient, body: dict, start_timeout: float) -> Result:
    """Streamed, so TTFT is the first content chunk; tokens come from the final usage chunk."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"X-Request-Timeout": f"{start_timeout:g}"}
    t0 = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return Result(_status_kind(resp.status_code))
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return Result("5xx")
            if chunk.get("choices") and first is None:
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return _finished(t0, first, tokens)


async def naive_request(client: httpx.AsyncClient, body: dict, start_timeout: float) -> Result:
    """Not streamed (the design has no streaming): the first token arrives with the last."""
    t0 = time.perf_counter()
    resp = await client.post("/v1/completions", json=body)
    if resp.status_code != 200:
        return Result(_status_kind(resp.status_code))
    return _finished(t0, None, resp.json()["usage"]["completion_tokens"])


def _finished(t0: float, first: float | None, tokens: int) -> Result:
    end = time.perf_counter()
    first = end if first is None else first
    tpot = (end - first) / (tokens - 1) if tokens > 1 and first < end else None
    return Result("ok", e2e=end - t0, ttft=first - t0, tpot=tpot, tokens=tokens)


def _status_kind(status: int) -> str:
    return "429" if status == 429 else ("5xx" if status >= 500 else "4xx")


async def guarded(send, client, body, start_timeout) -> Result:
    try:
        return await send(client, body, start_timeout)
    except httpx.TimeoutException:
        return Result("timeout")
    except httpx.TransportError:
        return Result("connection")


# ---- load shapes ---------------------------------------------------------------------------


def make_body(rng: random.Random, args: argparse.Namespace) -> dict:
    prompt = [rng.randrange(10, 400) for _ in range(args.prompt_tokens)]
    return {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True}


async def open_loop(url, send, rate, args, seed) -> list[Result]:
    """Poisson arrivals at `rate`/s for args.duration seconds; the client never waits to send."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(args.slo * args.client_timeout_factor, connect=10)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        tasks = []
        start = time.perf_counter()
        at = 0.0
        while at < args.duration:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = make_body(rng, args)
            tasks.append(asyncio.create_task(guarded(send, client, body, args.start_timeout)))
            at += rng.expovariate(rate)
        return await asyncio.gather(*tasks)


async def burst(url, send, n, args, seed) -> list[Result]:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=None)
    timeout = httpx.Timeout(args.slo * args.client_timeout_factor, connect=30)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        bodies = [make_body(rng, args) for _ in range(n)]
        return await asyncio.gather(*(guarded(send, client, b, args.start_timeout) for b in bodies))


async def closed_loop(url, concurrency, seconds, args) -> float:
    """Requests/s with `concurrency` clients each sending as soon as the last one finished."""
    rng = random.Random(7)
    done = 0
    stop = time.perf_counter() + seconds
    timeout = httpx.Timeout(600)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                result = await guarded(localseek_request, client, make_body(rng, args), 600)
                done += result.kind == "ok"

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t0)


# ---- summary -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summarize(
    design: str, label: str, offered: float, results: list[Result], window: float, slo: float
) -> dict:
    ok = [r for r in results if r.kind == "ok"]
    good = [r for r in ok if r.e2e is not None and r.e2e <= slo]
    kinds: dict[str, int] = {}
    for r in results:
        if r.kind != "ok":
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
    row = {
        "design": design,
        "load": label,
        "offered_rps": round(offered, 3),
        "sent": len(results),
        "completed": len(ok),
        "goodput_rps": round(len(good) / window, 3),
        "throughput_tok_s": round(sum(r.tokens for r in ok) / window, 1),
        "errors": kinds,
    }
    for name in ("ttft", "tpot", "e2e"):
        values = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        for q in (50, 90, 99):
            value = pct(values, q)
            row[f"{name}_p{q}"] = None if value is None else round(value, 3)
    return row


def fmt(value) -> str:
    return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def table(rows: list[dict]) -> str:
    cols = [
        "design",
        "load",
        "offered_rps",
        "sent",
        "completed",
        "goodput_rps",
        "throughput_tok_s",
        "ttft_p50",
        "ttft_p99",
        "tpot_p50",
        "e2e_p50",
        "e2e_p90",
        "e2e_p99",
        "errors",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [
            fmt(row[c])
            if c != "errors"
            else (", ".join(f"{k}: {v}" for k, v in sorted(row[c].items())) or "none")
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- servers -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in its own process (so it does not share this client's GIL), logs to a file."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path):
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self._log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log_dir / (name + '.log')}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not become healthy")
            time.sleep(0.5)

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def start_localseek(model: str, args, log_dir: Path) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "localseek",
        "serve",
        model,
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--max-queue",
        str(args.max_queue),
        "--kv-cache-tokens",
        str(args.kv_cache_tokens),
    ]
    return ServerProcess("localseek", argv, port, log_dir)


def start_naive(model: str, log_dir: Path) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "naive_server.py"),
        model,
        "--port",
        str(port),
    ]
    return ServerProcess("naive", argv, port, log_dir)


def wait_idle(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url + "/load", timeout=5).json()["queued"] == 0:
            return
        time.sleep(0.5)


# ---- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="HF model dir (default: a random Llama)")
    p.add_argument("--loads", default="0.5,1,2,5,10", help="multiples of measured capacity")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per level")
    p.add_argument("--burst", type=int, default=0, help="also one burst of N requests")
    p.add_argument("--slo", type=float, default=10.0, help="end-to-end deadline for goodput (s)")
    p.add_argument(
        "--start-timeout",
        type=float,
        default=None,
        help="X-Request-Timeout sent to localseek (default: SLO / 2)",
    )
    p.add_argument("--client-timeout-factor", type=float, default=1.5)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=32)
    p.add_argument("--kv-cache-tokens", type=int, default=8192)
    p.add_argument("--calibrate-seconds", type=float, default=15.0)
    p.add_argument("--out-dir", default=str(ROOT / "bench-out" / "serving"))
    args = p.parse_args()
    if args.start_timeout is None:
        args.start_timeout = args.slo / 2
    return args


def main() -> None:
    args = parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tiny_models import make_tiny_model

            model = str(make_tiny_model(Path(tmp), "llama", **MODEL_SHAPE))
        rows, capacity = run_all(model, args, out)
    (out / "results.json").write_text(
        json.dumps({"capacity_rps": capacity, "rows": rows, "args": vars(args)}, indent=2)
    )
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    from serving_plot import plot

    plot(rows, capacity, out / "serving.png")
    print(f"\nlocalseek capacity: {capacity:.2f} requests/s (SLO {args.slo:g}s)\n")
    print(text)
    for load in args.loads.split(","):
        by = {r["design"]: r for r in rows if r["load"] == f"{load}x"}
        if len(by) == 2:
            ratio = by["localseek"]["goodput_rps"] / max(by["naive"]["goodput_rps"], 1e-9)
            share = by["localseek"]["goodput_rps"] / capacity
            print(
                f"{load}x: goodput localseek/naive = {ratio:.1f}x; "
                f"localseek at {share:.0%} of capacity"
            )
    print(f"\nwrote {out / 'serving.png'}, {out / 'table.md'}, {out / 'results.json'}")


def run_all(model: str, args, out: Path) -> tuple[list[dict], float]:
    rows: list[dict] = []
    local = start_localseek(model, args, out)
    try:
        print("calibrating localseek capacity ...", flush=True)
        asyncio.run(closed_loop(local.url, args.max_num_seqs, 3, args))  # warm-up
        capacity = asyncio.run(
            closed_loop(local.url, args.max_num_seqs, args.calibrate_seconds, args)
        )
        print(f"  capacity {capacity:.2f} req/s", flush=True)
        levels = [float(x) for x in args.loads.split(",")]
        for i, level in enumerate(levels):
            rate = level * capacity
            wait_idle(local.url)
            print(f"load {level:g}x ({rate:.2f} req/s): localseek ...", flush=True)
            res = asyncio.run(open_loop(local.url, localseek_request, rate, args, seed=i))
            rows.append(summarize("localseek", f"{level:g}x", rate, res, args.duration, args.slo))
            local_paused = rows[-1]
            print(
                f"  {local_paused['completed']} ok, goodput {local_paused['goodput_rps']}/s",
                flush=True,
            )
            rows.append(run_naive_level(model, out, level, rate, args, seed=i))
        if args.burst:
            wait_idle(local.url)
            res = asyncio.run(burst(local.url, localseek_request, args.burst, args, seed=99))
            rows.append(summarize("localseek", f"burst {args.burst}", 0, res, args.slo, args.slo))
    finally:
        local.stop()
    if args.burst:
        rows.append(run_naive_burst(model, out, args))
    return rows, capacity


def run_naive_level(model, out, level, rate, args, seed) -> dict:
    naive = start_naive(model, out)
    try:
        print(f"load {level:g}x: naive ...", flush=True)
        res = asyncio.run(open_loop(naive.url, naive_request, rate, args, seed=seed))
    finally:
        naive.stop()
    row = summarize("naive", f"{level:g}x", rate, res, args.duration, args.slo)
    print(f"  {row['completed']} ok, goodput {row['goodput_rps']}/s", flush=True)
    return row


def run_naive_burst(model, out, args) -> dict:
    naive = start_naive(model, out)
    try:
        res = asyncio.run(burst(naive.url, naive_request, args.burst, args, seed=99))
    finally:
        naive.stop()
    return summarize("naive", f"burst {args.burst}", 0, res, args.slo, args.slo)


if __name__ == "__main__":
    main()
