"""The asyncio side of admission: waiters start as slots free, are displaced, expire, or leave."""

from __future__ import annotations

import asyncio
import time

import pytest

from localseek.errors import OverloadedError
from localseek.server.admission import AdmissionQueue, Ticket
from localseek.server.config import AdmissionConfig
from localseek.server.gate import AdmissionGate


def make_gate(slots=1, max_queue=2):
    refused: list[str] = []
    queue = AdmissionQueue(AdmissionConfig(max_queue=max_queue), slots, time.monotonic)
    return AdmissionGate(queue, refused.append), refused


async def test_waiter_starts_when_a_slot_frees():
    gate, _ = make_gate()
    first = Ticket("first", cost=10)
    await gate.enter(first)
    second = Ticket("second", cost=10)
    waiting = asyncio.create_task(gate.enter(second))
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.leave(first)
    await asyncio.wait_for(waiting, 5)
    assert second in gate.queue.running


async def test_displaced_waiter_gets_429_with_retry_after():
    gate, refused = make_gate(max_queue=1)
    await gate.enter(Ticket("running", cost=10))
    low = asyncio.create_task(gate.enter(Ticket("low", cost=10, priority=5)))
    await asyncio.sleep(0)
    high = asyncio.create_task(gate.enter(Ticket("high", cost=10, priority=0)))
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError) as info:
        await asyncio.wait_for(low, 5)
    assert info.value.retry_after >= 1 and "priority" in info.value.message
    assert refused == ["displaced"] and not high.done()
    high.cancel()


async def test_waiter_past_its_deadline_is_refused_not_left_hanging():
    gate, refused = make_gate()
    await gate.enter(Ticket("running", cost=10))
    late = Ticket("late", cost=10, deadline=time.monotonic() + 0.05)
    with pytest.raises(OverloadedError) as info:
        await asyncio.wait_for(gate.enter(late), 5)
    assert info.value.code == "request_timeout" and refused == ["expired"]


async def test_cancelled_waiter_leaves_the_queue():
    gate, _ = make_gate()
    running = Ticket("running", cost=10)
    await gate.enter(running)
    task = asyncio.create_task(gate.enter(Ticket("gone", cost=10)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.queue.waiting == []
    gate.leave(running)
    assert gate.queue.free_slots == 1
