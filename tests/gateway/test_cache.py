"""Response cache: keys, determinism, tenant scoping, LRU/TTL, Redis sharing, stream replay."""

from __future__ import annotations

import json

import httpx

from localseek.gateway.cache import MemoryCacheBackend, cache_key, is_deterministic

from .conftest import chat
from .fakes import full_answer

TENANTS = [{"name": "t1", "api_keys": ["sk-1"]}, {"name": "t2", "api_keys": ["sk-2"]}]


def key(body: dict, tenant: str = "t") -> str:
    return cache_key("chat", body, tenant, "v1")


def test_key_ignores_json_order_and_delivery_fields():
    a = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "x"}]}
    b = json.loads(
        '{"messages": [{"content": "x", "role": "user"}], "temperature": 0, "model": "m"}'
    )
    assert key(a) == key(b)
    assert key(a) == key(
        {**a, "stream": True, "stream_options": {"include_usage": True}, "user": "u"}
    )


def test_key_includes_every_output_affecting_field():
    base = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "x"}]}
    variants = [
        {"max_tokens": 5},
        {"stop": ["\n"]},
        {"tools": [{"type": "function"}]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"seed": 1},
        {"model": "m2"},
        {"top_p": 0.5},
        {"logprobs": True},
        {"some_future_field": 1},
    ]
    keys = {key(base)} | {key({**base, **v}) for v in variants}
    assert len(keys) == len(variants) + 1
    assert key(base, "t1") != key(base, "t2")
    assert cache_key("chat", base, "t", "v1") != cache_key("chat", base, "t", "v2")


def test_only_deterministic_requests_are_cacheable_by_default():
    assert is_deterministic({"temperature": 0}) and is_deterministic(
        {"temperature": 0.8, "seed": 3}
    )
    assert not is_deterministic({})  # absent temperature is OpenAI's 1.0
    assert not is_deterministic({"temperature": 0.7})


async def test_memory_backend_lru_byte_budget_and_ttl():
    now = [0.0]
    backend = MemoryCacheBackend(max_bytes=30, ttl_s=10, clock=lambda: now[0])
    for i in range(3):
        await backend.set(f"k{i}", b"x" * 10)
    await backend.get("k0")  # k0 is now most recently used
    await backend.set("k3", b"y" * 10)  # evicts k1, the least recently used
    assert await backend.get("k1") is None and await backend.get("k0") == b"x" * 10
    assert backend.bytes_used == 30
    now[0] = 10.0
    assert await backend.get("k0") is None  # expired
    assert backend.bytes_used == 20


def _post(url: str, body: dict, api_key: str = "sk-1") -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )


def test_repeat_is_a_hit_other_tenant_misses_nondeterministic_never_cached(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream()], "tenants": TENANTS})
    body = chat("cache me", temperature=0)
    first, second = _post(url, body), _post(url, body)
    assert first.json() == second.json()
    assert second.headers.get("x-localseek-cache") == "hit"
    assert len(a.completions()) == 1  # the upstream saw it once
    _post(url, body, api_key="sk-2")
    assert len(a.completions()) == 2  # another tenant never gets t1's answer
    _post(url, chat("creative")), _post(url, chat("creative"))
    assert len(a.completions()) == 4
    _post(url, {**body, "max_tokens": 3})
    assert len(a.completions()) == 5
    metrics = httpx.get(url + "/metrics").text
    assert "localseek_gateway_cache_hits_total 1.0" in metrics
    assert "localseek_gateway_cache_misses_total 3.0" in metrics


def test_stream_miss_is_stored_and_hits_replay_as_a_stream(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream()]})
    body = chat("stream me", temperature=0, stream=True)

    def stream_once() -> str:
        text, data = "", []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
            data = [line for line in r.iter_lines() if line.startswith("data: ")]
        for line in data[:-1]:
            for c in json.loads(line[6:])["choices"]:
                text += c["delta"].get("content") or ""
        assert data[-1] == "data: [DONE]"
        return text

    assert stream_once() == stream_once() == full_answer(8)
    non_streamed = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False}).json()
    assert non_streamed["choices"][0]["message"]["content"] == full_answer(8)
    assert len(a.completions()) == 1


def test_two_gateways_sharing_redis_share_hits(fake, gateway, redis_url):
    a = fake("a")
    config = {"upstreams": [a.upstream()], "redis_url": redis_url, "cache": {"backend": "redis"}}
    one, two = gateway(config), gateway(config)
    body = chat("shared", temperature=0)
    assert _post(one, body).status_code == 200
    hit = _post(two, body)
    assert hit.headers.get("x-localseek-cache") == "hit"
    assert len(a.completions()) == 1
