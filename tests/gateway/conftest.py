"""Fixtures: in-process fake upstreams and gateways on loopback, Redis when reachable."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from localseek.gateway.app import create_app
from localseek.gateway.config import parse_gateway_config

from .fakes import FakeState, make_app
from .servers import ServerThread

REDIS_URL = os.environ.get("LOCALSEEK_TEST_REDIS_URL", "redis://127.0.0.1:6390/0")

FAST_HEALTH = {"interval_s": 0.2, "probe_timeout_s": 1.0, "backoff_initial_s": 0.5}


class Fake:
    """A running in-process fake upstream."""

    def __init__(self, state: FakeState, server: ServerThread):
        self.state = state
        self.server = server
        self.url = server.url

    def upstream(self, **fields: Any) -> dict[str, Any]:
        return {"name": self.state.name, "url": self.url + "/v1", **fields}

    def completions(self) -> list[dict[str, Any]]:
        return self.state.requests


@pytest.fixture
def fake() -> Callable[..., Fake]:
    started: list[ServerThread] = []

    def start(name: str, **fields: Any) -> Fake:
        state = FakeState(name, **fields)
        server = ServerThread(make_app(state)).start()
        started.append(server)
        return Fake(state, server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway() -> Callable[..., str]:
    """Start a gateway from a config mapping; returns its base URL."""
    started: list[ServerThread] = []

    def start(config: dict[str, Any]) -> str:
        config = {"health": FAST_HEALTH, **config}
        server = ServerThread(create_app(parse_gateway_config(config))).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(
            f"redis not reachable at {REDIS_URL} (start: redis-server --port 6390 --daemonize yes)"
        )
    client.flushdb()
    client.close()
    return REDIS_URL


def chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
