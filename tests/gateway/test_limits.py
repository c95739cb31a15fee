"""Per-tenant token buckets: memory, Redis (atomic, shared across gateway processes)."""

from __future__ import annotations

import httpx
import pytest
import yaml

from localseek.errors import RateLimitError
from localseek.gateway.config import TenantConfig
from localseek.gateway.limits import Bucket, MemoryBucketStore, RateLimiter, RedisBucketStore

from .conftest import chat
from .servers import spawn_gateways, stop_process


async def test_memory_buckets_refill_and_take_all_or_nothing():
    now = [0.0]
    store = MemoryBucketStore(clock=lambda: now[0])
    rpm, tpm = Bucket("t:rpm", 2, 2 / 60), Bucket("t:tpm", 100, 100 / 60)
    assert await store.take([(rpm, 1), (tpm, 60)]) == 0
    wait = await store.take([(rpm, 1), (tpm, 60)])  # tokens short: nothing is taken
    assert wait == pytest.approx(20 / (100 / 60))
    assert await store.take([(rpm, 1), (tpm, 10)]) == 0  # the request bucket was not charged
    assert await store.take([(rpm, 1)]) > 0
    now[0] = 30.0  # one request refilled
    assert await store.take([(rpm, 1)]) == 0


async def test_limiter_raises_429_error_and_reconciles_actual_tokens():
    limiter = RateLimiter(MemoryBucketStore())
    tenant = TenantConfig(name="t", tokens_per_minute=100)
    await limiter.admit(tenant, 90)
    await limiter.reconcile(tenant, estimated=90, actual=10)  # 80 given back
    await limiter.admit(tenant, 85)
    with pytest.raises(RateLimitError) as err:
        await limiter.admit(tenant, 50)
    assert err.value.retry_after > 0 and "tokens_per_minute=100" in err.value.message


async def test_redis_buckets_are_one_limit_for_many_stores(redis_url):
    stores = [RedisBucketStore(redis_url), RedisBucketStore(redis_url)]
    bucket = Bucket("t:rpm", 5, 5 / 60)
    granted = [await stores[i % 2].take([(bucket, 1)]) == 0 for i in range(10)]
    assert sum(granted) == 5
    await stores[0].adjust(bucket, -2)  # reconcile gives two back
    assert await stores[1].take([(bucket, 2)]) == 0
    for s in stores:
        await s.aclose()


def test_requests_per_minute_is_429_with_retry_after(fake, gateway):
    a = fake("a")
    url = gateway(
        {
            "upstreams": [a.upstream()],
            "tenants": [{"name": "t", "api_keys": ["sk"], "requests_per_minute": 3}],
        }
    )
    statuses = [
        httpx.post(
            url + "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk"}
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    r = httpx.post(
        url + "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk"}
    )
    assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(a.completions()) == 3


def test_tokens_per_minute_holds_across_two_gateway_processes(fake, redis_url, tmp_path):
    a = fake("a", answer_tokens=8)
    tpm = 120
    config = {
        "upstreams": [a.upstream()],
        "redis_url": redis_url,
        "limits": {"backend": "redis"},
        "cache": {"enabled": False},
        "tenants": [{"name": "t", "api_keys": ["sk"], "tokens_per_minute": tpm}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    procs = spawn_gateways(path, 2)
    try:
        served, refused, largest = 0, 0, 0
        for i in range(20):
            url = procs[i % 2][1]
            r = httpx.post(
                url + "/v1/chat/completions",
                json=chat(max_tokens=8),
                headers={"Authorization": "Bearer sk"},
                timeout=10,
            )
            if r.status_code == 200:
                used = r.json()["usage"]["total_tokens"]
                served, largest = served + used, max(largest, used)
            else:
                assert r.status_code == 429 and "retry-after" in r.headers
                refused += 1
    finally:
        for proc, _ in procs:
            stop_process(proc)
    # One limit for both processes (plus refill during the test), not one limit per process.
    assert 0 < served <= tpm + 2 * largest
    assert refused >= 10
