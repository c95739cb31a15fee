"""Property: whatever a client sends the gateway, it never answers 5xx, errors are OpenAI-shaped,
and no upstream slot stays taken.

The gateway runs over a real `localseek serve` app (a tiny random Llama), so a body the
gateway lets through is judged by the real server, and its 4xx must come back as the client's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_values import any_json

from localseek.gateway.app import create_app
from localseek.gateway.config import parse_gateway_config

from .servers import ServerThread

pytestmark = pytest.mark.timeout(300)

MODEL = "tiny"
ROUTES = ("/v1/chat/completions", "/v1/completions")


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory) -> Iterator[str]:
    from tiny_models import make_tiny_model

    from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
    from localseek.engine.async_engine import AsyncEngine
    from localseek.server.app import build_app
    from localseek.server.config import ServerConfig

    model_dir = make_tiny_model(tmp_path_factory.mktemp("fuzz-model"), "llama")
    engine = AsyncEngine.from_config(
        EngineConfig(
            model=ModelConfig(model=str(model_dir), dtype="float32", device="cpu"),
            cache=CacheConfig(block_size=16, kv_cache_tokens=2048),
            scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256),
            show_progress=False,
        )
    )
    server = ServerThread(build_app(engine, ServerConfig(served_model_name=MODEL))).start()
    config = {
        "upstreams": [{"name": "replica", "url": server.url + "/v1", "max_concurrency": 4}],
        "max_body_bytes": 64 * 1024,
        "health": {"interval_s": 5.0},
    }
    gateway = ServerThread(create_app(parse_gateway_config(config))).start()
    yield gateway.url
    gateway.stop()
    server.stop()
    engine.shutdown()


_any_json = any_json(max_leaves=10)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"])},
    optional={"content": st.text(max_size=16) | _any_json},
)
_fields = {
    "model": st.sampled_from([MODEL, "other", ""]) | _any_json,
    "messages": st.lists(_message, max_size=3) | _any_json,
    "prompt": st.text(max_size=16) | st.lists(st.integers(-5, 600), max_size=4) | _any_json,
    "max_tokens": st.integers(-1, 4) | _any_json,
    "temperature": st.floats(-1, 3) | _any_json,
    "top_p": st.floats(-0.5, 1.5),
    "n": st.integers(0, 3),
    "stream": st.booleans() | _any_json,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | _any_json,
    "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=3) | _any_json,
    "seed": st.integers(-(2**64), 2**64),
    "frequency_penalty": st.floats(-3, 3),
    "user": _any_json,
}
# JSON that Python's parser accepts and JSON itself does not carry, or nests absurdly deep.
_hostile = st.sampled_from(
    [
        b'"frequency_penalty": NaN',
        b'"presence_penalty": -Infinity',
        b'"user": "\\ud800"',
        b'"metadata": ' + b"[" * 300 + b"]" * 300,
        b'"metadata": ' + b"{" * 3,
    ]
)


@st.composite
def _bodies(draw) -> bytes:
    body = draw(st.fixed_dictionaries({}, optional=_fields))
    if draw(st.booleans()):
        body["max_tokens"] = 2  # many bodies valid end to end, answered fast
    raw = json.dumps(body).encode()
    if draw(st.integers(0, 4)) == 0:  # splice a hostile field in
        fragment = draw(_hostile)
        raw = raw[:-1] + (b", " if body else b"") + fragment + b"}"
    return raw


def _in_flight(url: str) -> int:
    return sum(u["in_flight"] for u in httpx.get(url + "/health", timeout=10).json()["upstreams"])


def _check(url: str, route: str, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    with httpx.stream("POST", url + route, content=raw, headers=headers, timeout=60) as r:
        payload = r.read()
    assert r.status_code < 500, (r.status_code, payload[:300], raw[:300])
    if r.status_code != 200:
        error = json.loads(payload)["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
    deadline = time.monotonic() + 10  # a finished stream's slot is released as it closes
    while _in_flight(url) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _in_flight(url) == 0, raw[:300]


@settings(max_examples=70, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=_bodies(), route=st.sampled_from(ROUTES))
def test_fuzzed_bodies_never_5xx_and_hold_no_slot(gateway_url, raw, route):
    _check(gateway_url, route, raw)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=64), route=st.sampled_from(ROUTES))
def test_fuzzed_raw_bytes_never_5xx(gateway_url, raw, route):
    _check(gateway_url, route, raw)
