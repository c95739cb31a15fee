"""Redis down degrades the gateway, it does not fail it; Redis back, the gateway uses it again.

A real redis-server is started on a free loopback port and killed mid-test (the test skips,
naming the binary, where redis-server is not installed; .ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import chat
from .servers import free_port
from .test_client_disconnect import wait_until

KEY = {"Authorization": "Bearer sk-t"}


class RedisProcess:
    def __init__(self, port: int):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_process():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found on PATH (apt-get install redis-server)")
    server = RedisProcess(free_port()).start()
    yield server
    server.kill()


def gateway_config(upstream: dict, redis_url: str, on_error: str = "local", rpm: int = 100):
    return {
        "upstreams": [upstream],
        "redis_url": redis_url,
        "cache": {"backend": "redis"},
        "limits": {"backend": "redis", "on_redis_error": on_error},
        "tenants": [{"name": "t", "api_keys": ["sk-t"], "requests_per_minute": rpm}],
    }


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, headers=KEY, timeout=10)


def redis_errors(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "localseek_gateway_dependency_errors"
        for s in family.samples
        if s.name.endswith("_total")
    )


def test_redis_killed_and_restarted(fake, gateway, redis_process):
    a = fake("a")
    url = gateway(gateway_config(a.upstream(), redis_process.url, "local", rpm=6))
    greedy = chat("cached?", temperature=0)
    assert post(url, greedy).status_code == 200
    assert post(url, greedy).headers.get("x-localseek-cache") == "hit"
    assert httpx.get(url + "/health").json()["status"] == "ok"

    redis_process.kill()
    # Cache skipped (a miss, the upstream answers), streams too, limits kept per process.
    assert post(url, greedy).status_code == 200
    stream = post(url, {**greedy, "stream": True})
    assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
    health = httpx.get(url + "/health").json()
    assert health["status"] == "degraded" and health["redis"] == "down"
    assert redis_errors(url) >= 1
    statuses = [post(url, chat(f"n{i}")).status_code for i in range(8)]
    assert 429 in statuses and set(statuses) <= {200, 429}  # the local fallback limits
    assert len(a.completions()) == 1 + statuses.count(200) + 2

    redis_process.start()  # the same port: the gateway finds it again by itself
    assert wait_until(lambda: httpx.get(url + "/health").json()["status"] == "ok")
    assert post(url, greedy).status_code == 200  # stored again...
    assert post(url, greedy).headers.get("x-localseek-cache") == "hit"  # ...and served


@pytest.mark.parametrize(("on_error", "status"), [("allow", 200), ("deny", 503)])
def test_on_redis_error_allow_and_deny(fake, gateway, on_error, status):
    a = fake("a")
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    url = gateway(gateway_config(a.upstream(), dead, on_error, rpm=1))
    replies = [post(url, chat(f"q{i}")) for i in range(3)]
    assert [r.status_code for r in replies] == [status] * 3
    if status != 200:
        assert replies[0].json()["error"]["type"] == "service_unavailable"
    assert httpx.get(url + "/health").json()["status"] == "degraded"
