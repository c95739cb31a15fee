"""Real loopback servers for the gateway tests: uvicorn threads and killable processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A uvicorn server for `app` on a free loopback port, in a thread with its own loop."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def spawn_fake(name: str, *args: str) -> tuple[subprocess.Popen, str]:
    """A fake upstream in its own process (so a test can kill it): (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fakes.py"), "--port", str(port), "--name", name, *args]
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    return proc, url


def spawn_gateways(config_path: Path, count: int) -> list[tuple[subprocess.Popen, str]]:
    """`python -m localseek gateway --config X --port P` processes, started in parallel."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = []
    for _ in range(count):
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "localseek",
                "--log-level",
                "WARNING",
                "gateway",
                "--config",
                str(config_path),
                "--port",
                str(port),
            ],
            env=env,
        )
        started.append((proc, f"http://127.0.0.1:{port}"))
    for proc, url in started:
        wait_http(url + "/health", proc)
    return started


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
