"""Disaster-recovery scenario: 3 engine replicas + 2 gateways + Redis under load; kill one of each.

Every process is real and on loopback: `localseek serve` on a tiny random Llama (CPU), two
`localseek gateway` processes sharing Redis for the cache and rate limits, and Redis. Clients
send non-streaming chat completions round-robin over the two gateways and, like a load
balancer in front of them, retry once on the other gateway when a connection fails. Each
component in turn is killed with SIGKILL, left dead for --loss-s, restarted, and waited for;
first, one replica is stopped the planned way (SIGTERM: it drains) for comparison.

Reported per phase: requests started in the window [kill, recovered], those lost (no 200 even
after the retry), those that needed the retry, p50/p99 latency in the window, and the recovery
time (restart -> the component serves again and the gateways route to it).

    python benchmarks/dr_scenario.py [--concurrency 6] [--loss-s 8] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from serve_process import SRC, ServeProcess, free_port  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


@dataclass
class Record:
    start: float
    latency: float
    status: int | None  # None: no answer at all
    retried: bool


@dataclass
class Phase:
    name: str
    requests: int
    lost: int
    retried: int
    p50_ms: float
    p99_ms: float
    recovery_s: float | None
    failures: str  # what the lost requests got: "500 x3, no answer x1"
    lost_after: int | None = None  # lost among requests started after recovery (--settle-s)


class Cluster:
    """The processes of the scenario, each restartable on its own port."""

    def __init__(self, model: Path, workdir: Path):
        self.model = model
        self.redis_port = free_port()
        self.replica_ports = [free_port() for _ in range(3)]
        self.gateway_ports = [free_port() for _ in range(2)]
        self.config = workdir / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(self._gateway_config()))
        self.redis = self.start_redis()
        self.replicas = [self.start_replica(p) for p in self.replica_ports]
        self.gateways = [self.start_gateway(p) for p in self.gateway_ports]

    def _gateway_config(self) -> dict:
        return {
            "upstreams": [
                {"name": f"replica-{i}", "url": f"http://127.0.0.1:{p}/v1"}
                for i, p in enumerate(self.replica_ports)
            ],
            "redis_url": f"redis://127.0.0.1:{self.redis_port}/0",
            "cache": {"backend": "redis"},
            "limits": {"backend": "redis"},
            "health": {
                "interval_s": 0.5,
                "probe_timeout_s": 1.0,
                "failure_threshold": 2,
                "backoff_initial_s": 0.5,
                "backoff_max_s": 2.0,
            },
        }

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.gateway_ports]

    def start_redis(self) -> subprocess.Popen:
        cmd = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        proc = subprocess.Popen(
            [*cmd, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
        )
        _wait(lambda: _redis_up(self.redis_port), proc)
        return proc

    def start_replica(self, port: int) -> ServeProcess:
        return ServeProcess(self.model, "--max-num-seqs", "8", port=port).wait_ready()

    def start_gateway(self, port: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "localseek", "--log-level", "ERROR", "gateway"]
        proc = subprocess.Popen(
            [*cmd, "--config", str(self.config), "--port", str(port)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/health"), proc)
        return proc

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        for proc in [*self.gateways, self.redis]:
            proc.kill()
            proc.wait()


def _redis_up(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(ready, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for a component")
        time.sleep(0.05)


class Load:
    """Closed-loop clients over both gateways, retrying once on the other after a dead socket."""

    def __init__(self, urls: list[str], concurrency: int, max_tokens: int):
        self.urls = urls
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.records: list[Record] = []
        self._stop = asyncio.Event()
        self._count = itertools.count()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=4 * self.concurrency)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            k = next(self._count)
            body = {
                "model": "tiny",
                "messages": [{"role": "user", "content": f"request {k}"}],
                "max_tokens": self.max_tokens,
                "temperature": 0,
            }
            start = time.monotonic()
            status = await self._attempt(client, self.urls[k % 2], body)
            retried = status is None
            if retried:
                status = await self._attempt(client, self.urls[(k + 1) % 2], body)
            self.records.append(Record(start, time.monotonic() - start, status, retried))

    @staticmethod
    async def _attempt(client: httpx.AsyncClient, url: str, body: dict) -> int | None:
        try:
            return (await client.post(url + "/v1/chat/completions", json=body)).status_code
        except httpx.TransportError:
            return None


def summarize(name: str, records: list[Record], recovery_s: float | None) -> Phase:
    failed = Counter(
        "no answer" if r.status is None else str(r.status) for r in records if r.status != 200
    )
    latencies = sorted(r.latency for r in records) or [0.0]
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    return Phase(
        name=name,
        requests=len(records),
        lost=sum(1 for r in records if r.status != 200),
        retried=sum(1 for r in records if r.retried),
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=p99 * 1000,
        recovery_s=recovery_s,
        failures=", ".join(f"{k} x{v}" for k, v in failed.most_common()),
    )


async def lose(cluster: Cluster, load: Load, which: str, loss_s: float) -> Phase:
    """Kill one component, keep the load on, restart it, wait until it serves again."""
    loop = asyncio.get_running_loop()
    killed = time.monotonic()
    if which == "replica drained":
        # A planned stop (scale-in, rollout): SIGTERM drains, admitted requests finish.
        victim = cluster.replicas[0]
        victim.proc.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, victim.proc.wait)
        victim.stop()
    elif which == "replica":
        victim = cluster.replicas[0]
        victim.proc.kill()
        victim.stop()
    elif which == "gateway":
        cluster.gateways[0].kill()
        cluster.gateways[0].wait()
    else:
        cluster.redis.kill()
        cluster.redis.wait()
    await asyncio.sleep(loss_s)
    restarted = time.monotonic()
    await loop.run_in_executor(None, _restart, cluster, which)
    recovered = time.monotonic()
    window = [r for r in load.records if killed <= r.start <= recovered]
    name = which if which == "replica drained" else f"{which} lost"
    return summarize(name, window, recovered - restarted)


def _restart(cluster: Cluster, which: str) -> None:
    if which.startswith("replica"):
        cluster.replicas[0] = cluster.start_replica(cluster.replica_ports[0])
        # Recovered when every gateway routes to it again (circuit closed after a probe).
        name = "replica-0"
        _wait(lambda: all(_circuit(url, name) == "closed" for url in cluster.gateway_urls))
    elif which == "gateway":
        cluster.gateways[0] = cluster.start_gateway(cluster.gateway_ports[0])
    else:
        cluster.redis = cluster.start_redis()


def _circuit(gateway: str, upstream: str) -> str | None:
    try:
        states = httpx.get(gateway + "/health", timeout=1).json()["upstreams"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return next((s["circuit"] for s in states if s["name"] == upstream), None)


async def scenario(cluster: Cluster, args: argparse.Namespace) -> list[Phase]:
    load = Load(cluster.gateway_urls, args.concurrency, args.max_tokens)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(args.warmup_s)
    base_start = time.monotonic()
    await asyncio.sleep(args.baseline_s)
    phases = [summarize("baseline", [r for r in load.records if r.start >= base_start], None)]
    for which in ("replica drained", "replica", "gateway", "redis"):
        phase = await lose(cluster, load, which, args.loss_s)
        after = time.monotonic()
        await asyncio.sleep(args.settle_s)
        phase.lost_after = sum(1 for r in load.records if r.start >= after and r.status != 200)
        phases.append(phase)
    load.stop()
    await running
    return phases


def table(phases: list[Phase], args: argparse.Namespace) -> str:
    lines = [
        f"3 replicas (tiny random Llama, CPU) + 2 gateways + Redis; {args.concurrency} closed-loop "
        f"clients, non-streaming, max_tokens {args.max_tokens}; a replica stopped with SIGTERM "
        f"(drain), then each component SIGKILLed; down for {args.loss_s:g} s, restarted. "
        "Window: signal -> recovered.",
        "",
        "| phase | requests | lost | lost requests got | retried on the other gateway "
        "| p50 ms | p99 ms | recovery s | lost after recovery |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        recovery = "" if p.recovery_s is None else f"{p.recovery_s:.1f}"
        after = "" if p.lost_after is None else str(p.lost_after)
        lines.append(
            f"| {p.name} | {p.requests} | {p.lost} | {p.failures} | {p.retried} | "
            f"{p.p50_ms:.0f} | {p.p99_ms:.0f} | {recovery} | {after} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--baseline-s", type=float, default=8.0)
    parser.add_argument("--loss-s", type=float, default=8.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    from tiny_models import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "model", "llama")
        cluster = Cluster(model, Path(tmp))
        try:
            phases = asyncio.run(scenario(cluster, args))
        finally:
            cluster.stop()
    text = table(phases, args)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
