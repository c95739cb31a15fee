"""The two servers benchmarks/serving.py compares, each in its own process, logging to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server_process import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]


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
        stop_process(self._proc, grace=20)
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
