"""Serving under load: `localseek serve` against a naive FastAPI + thread-pool server, same run.

Both servers load the same model and run in their own processes; this script is the client.
First it measures each design's capacity (requests/s with 2 x --max-num-seqs closed-loop clients,
so localseek's queue is never empty),
then offers each open-loop Poisson load at multiples of its own capacity, and reports TTFT,
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
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serving_refusal import client_floor, refusal_burst  # noqa: E402
from serving_servers import start_localseek, start_naive, wait_idle  # noqa: E402

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


async def closed_loop(url, send, concurrency, seconds, args) -> float:
    """Requests/s with `concurrency` clients each sending as soon as the last one finished."""
    rng = random.Random(7)
    done = 0
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(900)) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                result = await guarded(send, client, make_body(rng, args), 900)
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
    design: str,
    label: str,
    offered: float,
    results: list[Result],
    window: float,
    slo: float,
    capacity: float,
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
        "capacity_rps": round(capacity, 3),
        "goodput_of_capacity": round(len(good) / window / capacity, 3),
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
        "capacity_rps",
        "goodput_rps",
        "goodput_of_capacity",
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


# ---- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="HF model dir (default: a random Llama)")
    p.add_argument("--loads", default="0.5,1,2,5,10", help="multiples of measured capacity")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per level")
    p.add_argument("--burst", type=int, default=0, help="also one burst of N requests")
    p.add_argument(
        "--refusal-burst",
        type=int,
        default=60,
        help="N chat requests at once against a full batch and queue: p99 time to 429 (0: skip)",
    )
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
        capacity = {"naive": calibrate_naive(model, args, out)}
        refusal: dict = {}
        rows = run_localseek(model, args, out, capacity, refusal)
        rows += run_naive(model, args, out, capacity["naive"])
    rows.sort(
        key=lambda r: (
            r["load"].startswith("burst"),
            float(r["load"].split()[-1].rstrip("x")),
            r["design"],
        )
    )
    report = {"capacity_rps": capacity, "rows": rows, "refusal": refusal, "args": vars(args)}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    from serving_plot import plot

    plot(rows, out / "serving.png")
    print(
        f"\ncapacity (requests/s, {2 * args.max_num_seqs} closed-loop clients): "
        + ", ".join(f"{k} {v:.2f}" for k, v in capacity.items())
        + f"; SLO {args.slo:g}s\n"
    )
    print(text)
    for load in args.loads.split(","):
        by = {r["design"]: r for r in rows if r["load"] == f"{float(load):g}x"}
        if len(by) == 2:
            print(
                f"{load}x own capacity: goodput localseek {by['localseek']['goodput_of_capacity']:.0%}"
                f" of its capacity, naive {by['naive']['goodput_of_capacity']:.0%} of its capacity; "
                f"localseek/naive goodput {_ratio(by)}"
            )
    print(f"\nwrote {out / 'serving.png'}, {out / 'table.md'}, {out / 'results.json'}")


def _ratio(by: dict) -> str:
    naive = by["naive"]["goodput_rps"]
    return "inf (naive 0)" if naive == 0 else f"{by['localseek']['goodput_rps'] / naive:.1f}x"


def _levels(args) -> list[float]:
    return [float(x) for x in args.loads.split(",")]


def calibrate_naive(model: str, args, out: Path) -> float:
    naive = start_naive(model, out)
    try:
        print("calibrating naive capacity ...", flush=True)
        capacity = asyncio.run(
            closed_loop(
                naive.url, naive_request, 2 * args.max_num_seqs, args.calibrate_seconds, args
            )
        )
    finally:
        naive.stop()
    print(f"  capacity {capacity:.2f} req/s", flush=True)
    return max(capacity, 1e-3)


def run_localseek(model: str, args, out: Path, capacity: dict, refusal: dict) -> list[dict]:
    rows = []
    local = start_localseek(model, args, out)
    try:
        print("calibrating localseek capacity ...", flush=True)
        asyncio.run(closed_loop(local.url, localseek_request, args.max_num_seqs, 3, args))
        cap = asyncio.run(
            closed_loop(
                local.url, localseek_request, 2 * args.max_num_seqs, args.calibrate_seconds, args
            )
        )
        capacity["localseek"] = cap
        print(f"  capacity {cap:.2f} req/s", flush=True)
        for i, level in enumerate(_levels(args)):
            wait_idle(local.url)
            print(f"load {level:g}x: localseek at {level * cap:.2f} req/s ...", flush=True)
            res = asyncio.run(open_loop(local.url, localseek_request, level * cap, args, seed=i))
            rows.append(
                summarize(
                    "localseek", f"{level:g}x", level * cap, res, args.duration, args.slo, cap
                )
            )
            print(f"  {rows[-1]['completed']} ok, goodput {rows[-1]['goodput_rps']}/s", flush=True)
        if args.burst:
            wait_idle(local.url)
            res = asyncio.run(burst(local.url, localseek_request, args.burst, args, seed=99))
            rows.append(
                summarize("localseek", f"burst {args.burst}", 0, res, args.slo, args.slo, cap)
            )
        if args.refusal_burst:
            wait_idle(local.url)
            refusal.update(
                asyncio.run(refusal_burst(local.url, args.refusal_burst, 8 * args.max_tokens))
            )
    finally:
        local.stop()
    if args.refusal_burst:
        # On an idle machine, after the server has gone: the burst client's own share.
        refusal.update(client_floor(args.refusal_burst, out))
        print(f"refusal burst (target p99 <= 50 ms): {refusal}", flush=True)
    return rows


def run_naive(model: str, args, out: Path, cap: float) -> list[dict]:
    """Each level on a fresh naive server: it cannot cancel, so backlogs would carry over."""
    rows = []
    for i, level in enumerate(_levels(args)):
        naive = start_naive(model, out)
        try:
            print(f"load {level:g}x: naive at {level * cap:.2f} req/s ...", flush=True)
            res = asyncio.run(open_loop(naive.url, naive_request, level * cap, args, seed=i))
        finally:
            naive.stop()
        rows.append(
            summarize("naive", f"{level:g}x", level * cap, res, args.duration, args.slo, cap)
        )
        print(f"  {rows[-1]['completed']} ok, goodput {rows[-1]['goodput_rps']}/s", flush=True)
    if args.burst:
        naive = start_naive(model, out)
        try:
            res = asyncio.run(burst(naive.url, naive_request, args.burst, args, seed=99))
        finally:
            naive.stop()
        rows.append(summarize("naive", f"burst {args.burst}", 0, res, args.slo, args.slo, cap))
    return rows


if __name__ == "__main__":
    main()
