"""A benchmarked server as a subprocess on loopback: start, wait for /health, peak memory, stop."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, log, timeout: float = 600) -> None:
    """Until `url` answers 200; the log's tail in the error if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read()[-3000:].decode(errors="replace")
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout} s")


def stop_process(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Memory:
    """Resident bytes of a process tree: all of it, and the part not backed by a file.

    A server that memory-maps its GGUF (llama.cpp does by default) has the file's touched
    pages in its RSS although the kernel can drop them at will; `anon` leaves them out
    (RSS minus psutil's `shared`: file-backed and shared-memory pages)."""

    rss: int = 0
    anon: int = 0

    def max(self, other: Memory) -> Memory:
        return Memory(max(self.rss, other.rss), max(self.anon, other.anon))


class RssSampler:
    """Peak resident memory of a process and all its children, sampled from a thread.

    psutil reads /proc; 0.2 s between samples catches the load's peak (seconds long) and
    costs well under 1% of a core."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self._lock = threading.Lock()
        self._peak = Memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def current(self) -> Memory:
        """The tree's memory now (zero once the process is gone)."""
        import psutil

        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return Memory()
        rss = anon = 0
        for proc in procs:
            try:
                info = proc.memory_info()
            except psutil.Error:
                continue  # a child that exited between the listing and the read
            rss += info.rss
            anon += info.rss - getattr(info, "shared", 0)  # `shared` is Linux-only
        return Memory(rss, anon)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = self.current()
            with self._lock:
                self._peak = self._peak.max(now)
            self._stop.wait(self._interval)

    def take_peak(self) -> Memory:
        """The peak since the last call (or the start); sampling starts over."""
        now = self.current()
        with self._lock:
            peak, self._peak = self._peak.max(now), Memory()
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ServerProcess:
    """`argv` plus `--port P` on 127.0.0.1, logging to a temporary file, memory sampled."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.argv, self.env = argv, env
        self.proc: subprocess.Popen | None = None
        self.rss: RssSampler | None = None
        self.base = ""

    def start(self, health_timeout: float = 600) -> float:
        """Start it and wait until /health answers; returns the seconds that took."""
        port = free_port()
        self.log = tempfile.TemporaryFile()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv + ["--port", str(port)], stdout=self.log, stderr=self.log, env=self.env
        )
        self.rss = RssSampler(self.proc.pid)
        self.base = f"http://127.0.0.1:{port}"
        wait_health(f"{self.base}/health", self.proc, self.log, health_timeout)
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None
        self.log.close()
