"""Admission queue: bounded, priority order, deadlines, no lost slots on cancellation."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from localseek.gateway.slot_queue import SlotQueue

from .conftest import chat


class Slots:
    def __init__(self, n: int) -> None:
        self.free = n

    def take(self):
        if self.free > 0:
            self.free -= 1
            return "slot"
        return None

    def give_back(self, _slot) -> None:
        self.free += 1


async def test_waiters_are_served_in_priority_order():
    queue: SlotQueue[str] = SlotQueue(max_queue=10)
    slots = Slots(0)
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        got = await queue.wait(slots.take, priority=priority, timeout=5, give_back=slots.give_back)
        assert got == "slot"
        order.append(name)

    tasks = [asyncio.create_task(waiter(n, p)) for n, p in (("low", 5), ("high", 0), ("mid", 2))]
    await asyncio.sleep(0.01)
    assert queue.depth == 3
    for _ in range(3):
        slots.free += 1
        queue.notify()
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == ["high", "mid", "low"]


async def test_full_queue_refuses_at_once_and_deadline_expires():
    queue: SlotQueue[str] = SlotQueue(max_queue=1)
    slots = Slots(0)
    first = asyncio.create_task(
        queue.wait(slots.take, priority=0, timeout=0.3, give_back=slots.give_back)
    )
    await asyncio.sleep(0.01)
    assert queue.full
    assert await queue.wait(slots.take, priority=0, timeout=5, give_back=slots.give_back) is None
    assert await first is None  # timed out
    assert queue.depth == 0


async def test_cancelled_waiter_leaves_the_queue_and_returns_a_granted_slot():
    queue: SlotQueue[str] = SlotQueue(max_queue=4)
    slots = Slots(0)
    task = asyncio.create_task(
        queue.wait(slots.take, priority=0, timeout=5, give_back=slots.give_back)
    )
    await asyncio.sleep(0.01)
    slots.free = 1
    queue.notify()  # granted, but the client goes away before it runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slots.free == 1 and queue.depth == 0


def test_retry_after_grows_with_the_queue():
    queue: SlotQueue[str] = SlotQueue(max_queue=4)
    queue.record_service_time(10.0)
    assert queue.retry_after(capacity=1) >= 1


def test_local_only_request_gets_429_with_retry_after_when_local_is_full(fake, gateway):
    slow = fake("slow", latency_s=1.5)
    url = gateway(
        {
            "upstreams": [slow.upstream(max_concurrency=1)],
            "admission": {"max_queue": 1, "max_queue_wait_s": 5},
        }
    )

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            return await asyncio.gather(
                *(client.post(url + "/v1/chat/completions", json=chat()) for _ in range(3))
            )

    statuses = sorted(r.status_code for r in asyncio.run(run()))
    # one runs, one waits in the queue and then runs, the third finds the queue full: 429 at once
    assert statuses == [200, 200, 429]
    assert len(slow.completions()) == 2


def test_queue_wait_deadline_gives_429_with_retry_after(fake, gateway):
    slow = fake("slow", latency_s=2)
    url = gateway(
        {
            "upstreams": [slow.upstream(max_concurrency=1)],
            "admission": {"max_queue": 4, "max_queue_wait_s": 0.3},
        }
    )

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            first = asyncio.create_task(client.post(url + "/v1/chat/completions", json=chat()))
            await asyncio.sleep(0.3)
            second = await client.post(url + "/v1/chat/completions", json=chat())
            return [await first, second]

    first, second = asyncio.run(run())
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    assert second.json()["error"]["code"] == "server_overloaded"


def test_cloud_eligible_request_waits_overflow_after_s_for_local_first(fake, gateway):
    local = fake("local", latency_s=0.5)
    cloud = fake("cloud")
    url = gateway(
        {
            "upstreams": [local.upstream(max_concurrency=1), cloud.upstream(kind="cloud")],
            "admission": {"overflow_after_s": 5},
        }
    )

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            first = asyncio.create_task(client.post(url + "/v1/chat/completions", json=chat()))
            await asyncio.sleep(0.2)
            second = await client.post(url + "/v1/chat/completions", json=chat())
            return [await first, second]

    assert [r.status_code for r in asyncio.run(run())] == [200, 200]
    assert len(local.completions()) == 2 and cloud.completions() == []
