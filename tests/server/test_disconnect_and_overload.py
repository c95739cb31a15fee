"""A client that leaves frees its request at once; a burst far past capacity gets only results
and immediate 429s with Retry-After — no hangs, no 5xx — and high priority gets through."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from conftest import engine_config, pool_is_whole, serve, wait_until

pytestmark = pytest.mark.timeout(180)

LONG = 480  # output tokens a request would run for if nobody stopped it (context: 512)


def long_request(stream: bool) -> dict:
    return {
        "prompt": "Once upon a time",
        "max_tokens": LONG,
        "ignore_eos": True,
        "temperature": 0,
        "stream": stream,
    }


def test_stream_disconnect_aborts_and_frees_the_blocks(engine):
    with serve(engine) as live:
        before = engine.stats().generation_tokens_total
        with httpx.Client(base_url=live.url, timeout=60) as client:
            with client.stream("POST", "/v1/completions", json=long_request(True)) as resp:
                assert resp.status_code == 200
                events = 0
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        events += 1
                    if events == 3:
                        assert engine.stats().num_running == 1
                        break  # leave mid-stream: the connection closes
        assert wait_until(lambda: pool_is_whole(engine))
        assert engine.stats().generation_tokens_total - before < LONG


def test_non_streaming_disconnect_aborts_too(engine):
    with serve(engine) as live:
        before = engine.stats().generation_tokens_total
        body = json.dumps(long_request(False)).encode()
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head + body)
            assert wait_until(lambda: engine.stats().num_running == 1, interval=0.005)
        # The socket is closed while the engine is still generating.
        assert wait_until(lambda: pool_is_whole(engine))
        assert engine.stats().generation_tokens_total - before < LONG
        assert live.app.state.server.gate.queue.free_slots == engine.stats().max_num_seqs


@pytest.fixture(scope="module")
def small_engine(tiny_model_dir):
    from localseek.engine.async_engine import AsyncEngine

    eng = AsyncEngine.from_config(engine_config(tiny_model_dir, max_num_seqs=2))
    yield eng
    eng.shutdown()


async def _burst(url: str, total: int, high: set[int]) -> list[httpx.Response]:
    body = {"prompt": "Hello, world!", "max_tokens": 32, "ignore_eos": True, "temperature": 0}
    limits = httpx.Limits(max_connections=total + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            headers = {"X-Priority": "-5"} if i in high else {}
            return await client.post("/v1/completions", json=body, headers=headers)

        return await asyncio.gather(*(one(i) for i in range(total)))


def test_burst_of_ten_times_capacity(small_engine):
    # Capacity: 2 running + 3 waiting. Three high-priority requests hide in a burst of 50.
    with serve(small_engine, max_queue=3) as live:
        high = {17, 33, 49}
        responses = asyncio.run(_burst(live.url, 50, high))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(429) > 0 and statuses.count(200) >= 5
        for i in high:
            assert statuses[i] == 200, responses[i].text
        for r in responses:
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
                error = r.json()["error"]
                assert error["type"] == "rate_limit_error" and "retry after" in error["message"]
            else:
                assert r.json()["usage"]["completion_tokens"] == 32
        metrics = httpx.get(live.url + "/metrics").text
        assert 'localseek:requests_refused_total{reason="queue_full"}' in metrics
        assert wait_until(lambda: pool_is_whole(small_engine))
