"""Overflow to the cloud is counted with its reason: local upstreams full, or all down."""

from __future__ import annotations

import asyncio

import httpx

from .conftest import chat
from .servers import free_port
from .test_metrics import samples

REASONS = "localseek_gateway_overflow_reasons_total"


def test_overflow_when_every_local_circuit_is_open_is_local_down(fake, gateway):
    cloud = fake("cloud")
    dead = {"name": "local", "url": f"http://127.0.0.1:{free_port()}/v1"}
    url = gateway({"upstreams": [dead, cloud.upstream(kind="cloud")]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=20)
    assert r.status_code == 200 and len(cloud.completions()) == 1
    assert samples(url)[(REASONS, (("reason", "local_down"),))] == 1


def test_overflow_when_the_local_slot_is_taken_is_local_full(fake, gateway):
    local = fake("local", latency_s=1.0)
    cloud = fake("cloud")
    url = gateway({"upstreams": [local.upstream(max_concurrency=1), cloud.upstream(kind="cloud")]})

    async def two_at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=20) as client:
            first = asyncio.create_task(client.post(url + "/v1/chat/completions", json=chat("a")))
            await asyncio.sleep(0.3)  # the only local slot is now taken
            second = await client.post(url + "/v1/chat/completions", json=chat("b"))
            return [(await first).status_code, second.status_code]

    assert asyncio.run(two_at_once()) == [200, 200]
    m = samples(url)
    assert m[(REASONS, (("reason", "local_full"),))] == 1
    assert (REASONS, (("reason", "local_down"),)) not in m
