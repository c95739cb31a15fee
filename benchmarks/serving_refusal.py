"""Time to a 429: a burst of chat requests against a server whose batch and queue are full.

Issue 13's target: with the engine running a full batch and the queue full, a burst of 60
requests is refused with p99 <= 50 ms, because admission refuses before the chat template is
rendered and the prompt tokenized (those wait for a worker thread on a busy machine).
"""

from __future__ import annotations

import asyncio
import time

import httpx

PROMPT = "Summarise the following notes in three bullet points. " * 40


async def _timed(client: httpx.AsyncClient, body: dict) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        resp = await client.post("/v1/chat/completions", json=body)
        return resp.status_code, time.perf_counter() - t0
    except httpx.HTTPError:
        return 0, time.perf_counter() - t0


async def _fill(client: httpx.AsyncClient, count: int, max_tokens: int) -> list[asyncio.Task]:
    """`count` long streamed requests that hold the batch and the queue until cancelled."""
    body = {
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }

    async def hold() -> None:
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            async for _ in resp.aiter_bytes():
                pass

    return [asyncio.create_task(hold()) for _ in range(count)]


async def _until_full(client: httpx.AsyncClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        load = (await client.get("/load")).json()
        if load["running"] >= load["capacity"] and load["waiting"] >= load["max_queue"]:
            return load
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the server did not fill up within {timeout}s: {load}")


async def refusal_burst(url: str, n: int, max_tokens: int) -> dict:
    """Fill the batch and the queue, then send `n` chat requests at once; the 429s' latency."""
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        load = (await client.get("/load")).json()
        holders = await _fill(client, load["capacity"] + load["max_queue"], max_tokens)
        try:
            await _until_full(client)
            body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}
            results = await asyncio.gather(*(_timed(client, body) for _ in range(n)))
        finally:
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
    refused = sorted(s for status, s in results if status == 429)
    other: dict[str, int] = {}
    for status, _ in results:
        if status != 429:
            other[str(status)] = other.get(str(status), 0) + 1
    return {
        "burst": n,
        "refused": len(refused),
        "refusal_p50_ms": _ms(refused, 50),
        "refusal_p99_ms": _ms(refused, 99),
        "refusal_max_ms": _ms(refused, 100),
        "other_statuses": other,
    }


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))
    return round(values[index] * 1000, 1)
