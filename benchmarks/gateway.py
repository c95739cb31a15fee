"""Gateway overhead: direct vs localseek gateway vs nginx vs LiteLLM proxy, plus cache hits.

One run, one fake upstream with a fixed short latency (the tests' localseek-shaped fake, in its
own process). For each path: requests/s at a fixed concurrency, and p50/p99 latency of
sequential requests, with the latency added over going direct. The cache row is the
end-to-end latency of a cache hit over HTTP.

    python benchmarks/gateway.py [--requests 2000] [--concurrency 16] [--latency 0.005]
                                 [--litellm auto|skip|/path/to/litellm] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
FAKE = ROOT / "tests" / "gateway" / "fakes.py"
LITELLM_VENV = ROOT / "bench-out" / "litellm-venv"
LITELLM_KEY = "sk-" + secrets.token_hex(32)
BODY = {"model": "m", "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": 8}


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    note: str = ""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def spawn(cmd: list[str], health: str, env: dict | None = None, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    wait_up(health, proc)
    return proc


async def sequential(url: str, n: int, body: dict, headers: dict) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            r = await client.post(url, json=body, headers=headers)
            out.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return out


async def concurrent(url: str, n: int, concurrency: int, headers: dict) -> float:
    """Requests per second over n requests with `concurrency` clients."""
    remaining = n
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                r = await client.post(url, json=BODY, headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] * 1000


def measure(name: str, base: str, args, headers: dict | None = None, note: str = "") -> Row:
    url = base + "/v1/chat/completions"
    headers = headers or {}
    asyncio.run(sequential(url, 30, BODY, headers))  # warm connections and code paths
    lat = asyncio.run(sequential(url, args.sequential, BODY, headers))
    rps = asyncio.run(concurrent(url, args.requests, args.concurrency, headers))
    row = Row(name, rps, pct(lat, 50), pct(lat, 99), note)
    print(f"  {name:<24} {rps:8.0f} req/s   p50 {row.p50_ms:7.2f} ms   p99 {row.p99_ms:7.2f} ms")
    return row


def start_gateway(upstream: str, tmp: Path, **extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {"port": port, "upstreams": [{"name": "fake", "url": upstream + "/v1"}], **extra}
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [
        sys.executable,
        "-m",
        "localseek",
        "--log-level",
        "WARNING",
        "gateway",
        "--config",
        str(path),
    ]
    return spawn(cmd, f"http://127.0.0.1:{port}/health", env=env), f"http://127.0.0.1:{port}"


def start_nginx(upstream: str, tmp: Path) -> tuple[subprocess.Popen, str] | str:
    nginx = shutil.which("nginx")
    if nginx is None:
        return "nginx not installed (apt-get install -y nginx)"
    from localseek.gateway.config import parse_gateway_config
    from localseek.ops.deploy.nginx import render_nginx

    port = free_port()
    config = parse_gateway_config(
        {"port": port, "upstreams": [{"name": "fake", "url": upstream + "/v1"}]}
    )
    (tmp / "logs").mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"pid {tmp}/nginx.pid;\nerror_log {tmp}/logs/error.log;\nworker_processes 1;\n"
        f"events {{}}\nhttp {{\n access_log off;\n client_body_temp_path {tmp};\n"
        f" proxy_temp_path {tmp};\n{render_nginx(config)}}}\n"
    )
    cmd = [nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"]
    return spawn(cmd, f"http://127.0.0.1:{port}/health"), f"http://127.0.0.1:{port}"


def find_litellm(choice: str) -> str:
    """The litellm executable, installing it into bench-out/ if it brings no torch; or a reason."""
    if choice != "auto":
        return choice
    for candidate in (shutil.which("litellm"), LITELLM_VENV / "bin" / "litellm"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pip = LITELLM_VENV / "bin" / "pip"
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    dry = subprocess.run(
        [str(pip), "install", "--dry-run", "litellm[proxy]"], capture_output=True, text=True
    )
    if dry.returncode != 0:
        return "SKIP: litellm[proxy] cannot be resolved from PyPI here"
    if "torch" in dry.stdout.lower():
        return "SKIP: litellm[proxy] would pull torch"
    subprocess.run([str(pip), "install", "-q", "litellm[proxy]"], check=True)
    return str(LITELLM_VENV / "bin" / "litellm")


def start_litellm(exe: str, upstream: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": "m",
                "litellm_params": {
                    "model": "openai/m",
                    "api_base": upstream + "/v1",
                    "api_key": "none",
                },
            }
        ]
    }
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch at start
        "LITELLM_MASTER_KEY": LITELLM_KEY,  # it refuses to start without one
    }
    cmd = [
        exe,
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return spawn(
        cmd, f"http://127.0.0.1:{port}/health/liveliness", env=env
    ), f"http://127.0.0.1:{port}"


def cache_hit_row(base: str, n: int) -> Row:
    url = base + "/v1/chat/completions"
    body = {**BODY, "temperature": 0}
    asyncio.run(sequential(url, 5, body, {}))  # the first is the miss that fills the cache
    lat = asyncio.run(sequential(url, n, body, {}))
    row = Row(
        "gateway cache hit", 0.0, pct(lat, 50), pct(lat, 99), "sequential, end to end over HTTP"
    )
    print(f"  {row.name:<24} {'':>8}         p50 {row.p50_ms:7.2f} ms   p99 {row.p99_ms:7.2f} ms")
    return row


def markdown(rows: list[Row], direct: Row, args, skipped: list[str]) -> str:
    cmd = "python benchmarks/gateway.py " + " ".join(sys.argv[1:])
    lines = [
        "## Gateway overhead",
        "",
        f"`{cmd.strip()}` — {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}; fake upstream with {args.latency * 1000:.0f} ms latency, "
        f"{args.concurrency} concurrent clients for req/s, {args.sequential} sequential requests "
        "for latency. Every process (upstream, proxy, load generator) shares the same cores.",
        "",
        "| path | req/s | vs direct | p50 ms | p99 ms | added p50 ms | added p99 ms | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r.rps / direct.rps:.2f}x" if r.rps else "-"
        rps = f"{r.rps:.0f}" if r.rps else "-"
        lines.append(
            f"| {r.name} | {rps} | {ratio} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.p50_ms - direct.p50_ms:+.2f} | {r.p99_ms - direct.p99_ms:+.2f} | {r.note} |"
        )
    lines += [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sequential", type=int, default=300)
    p.add_argument("--latency", type=float, default=0.005, help="upstream latency in seconds")
    p.add_argument("--litellm", default="auto", help="auto, skip, or the litellm executable")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    args = p.parse_args()

    procs: list[subprocess.Popen] = []
    rows: list[Row] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        try:
            port = free_port()
            fake_cmd = [
                sys.executable,
                str(FAKE),
                "--port",
                str(port),
                "--latency",
                str(args.latency),
            ]
            procs.append(spawn(fake_cmd, f"http://127.0.0.1:{port}/health"))
            upstream = f"http://127.0.0.1:{port}"
            print(f"upstream: fake with {args.latency * 1000:.0f} ms latency at {upstream}")
            direct = measure("direct", upstream, args)
            rows.append(direct)

            targets: list[tuple[str, Callable[[], object], str]] = [
                (
                    "localseek gateway",
                    lambda: start_gateway(upstream, tmp),
                    "policy, limits, cache lookup (miss)",
                ),
                (
                    "nginx",
                    lambda: start_nginx(upstream, tmp),
                    "rendered by `localseek deploy nginx`",
                ),
            ]
            if args.litellm != "skip":
                exe = find_litellm(args.litellm)
                if exe.startswith("SKIP"):
                    skipped.append(f"LiteLLM proxy: {exe}")
                else:
                    targets.append(
                        (
                            "LiteLLM proxy",
                            lambda: start_litellm(exe, upstream, tmp),
                            "litellm[proxy], 1 worker",
                        )
                    )
            else:
                skipped.append("LiteLLM proxy: skipped by --litellm skip")
            for name, start, note in targets:
                try:
                    started = start()
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    started = f"did not start: {exc}"
                if isinstance(started, str):
                    skipped.append(f"{name}: {started}")
                    print(f"  {name:<24} skipped: {started}")
                    continue
                proc, base = started
                procs.append(proc)
                headers = (
                    {"Authorization": f"Bearer {LITELLM_KEY}"} if name.startswith("LiteLLM") else {}
                )
                rows.append(measure(name, base, args, headers=headers, note=note))
                if name == "localseek gateway":
                    rows.append(cache_hit_row(base, args.sequential))
                proc.terminate()
                proc.wait(timeout=20)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=20)
    table = markdown(rows, direct, args, skipped)
    print()
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
