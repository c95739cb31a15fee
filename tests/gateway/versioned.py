"""Helpers for the model-version and reload tests: two fake pools behind a GatewayFront."""

from __future__ import annotations

import functools

import openai
import yaml

from localseek.gateway.app import create_app
from localseek.gateway.config import parse_gateway_config
from localseek.gateway.front import GatewayFront

from .conftest import FAST_HEALTH
from .servers import ServerThread

ADMIN = {"authorization": "Bearer admin-secret"}


def versions(stable: int = 90, canary: int = 10, sticky: str = "session") -> dict:
    return {
        "name": "r1",
        "sticky": sticky,
        "versions": [
            {"name": "stable", "model": "r1-v1", "weight": stable},
            {"name": "canary", "model": "r1-v2", "weight": canary},
        ],
    }


def config(stable_url: str, canary_url: str, **extra) -> dict:
    return {
        "health": FAST_HEALTH,
        "upstreams": [
            {"name": "stable-pool", "url": stable_url + "/v1", "models": ["r1-v1"]},
            {"name": "canary-pool", "url": canary_url + "/v1", "models": ["r1-v2"]},
        ],
        "models": [versions()],
        "admin": {"api_keys": ["admin-secret"]},
        **extra,
    }


def front_factory(fake, tmp_path):
    """Generator behind the `front` fixtures: start(**extra) serves a GatewayFront over two
    fakes from a config file and returns (url, config path)."""
    started = []
    pools = fake("stable-pool"), fake("canary-pool")

    def start(**extra):
        data = config(pools[0].url, pools[1].url, **extra)
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(data))
        app = GatewayFront(parse_gateway_config(data), create_app, path)
        server = ServerThread(app).start()
        started.append(server)
        return server.url, path

    start.pools = pools  # the two fakes, for tests that look at what reached them
    yield start
    for server in started:
        server.stop()


@functools.cache
def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def ask(url: str, session: str | None = None, key: str = "none") -> tuple[str, str, str]:
    """(version header, upstream that answered, model the upstream was asked for)."""
    client = _client(url, key)
    headers = {"X-Session-Id": session} if session else {}
    raw = client.chat.completions.with_raw_response.create(
        model="r1", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    body = raw.parse()
    return raw.headers["x-localseek-model-version"], body.served_by, body.model
