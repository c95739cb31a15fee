"""SlotQueue: a bounded priority queue of requests waiting for a local upstream slot, with deadlines."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.25  # waiters re-check on their own this often: circuits reopen by time, not events


@dataclass(order=True)
class _Waiter(Generic[T]):
    priority: int
    seq: int
    try_take: Callable[[], T | None] = field(compare=False)
    event: asyncio.Event = field(compare=False, default_factory=asyncio.Event)
    result: T | None = field(compare=False, default=None)


class SlotQueue(Generic[T]):
    """Requests that found no free local slot wait here, best priority (lowest number) first.

    The queue holds at most `max_queue` waiters: a request that finds it full is refused at once
    (the caller turns that into 429 + Retry-After, or a cloud overflow), never queued without
    bound. `notify()` is called whenever a slot may have freed; it hands slots to waiters in
    priority order, trying every waiter so one waiting for a busy model does not block others.
    """

    def __init__(self, max_queue: int):
        self._max = max_queue
        self._waiters: list[_Waiter[T]] = []
        self._seq = itertools.count()
        self._service_s = 1.0  # moving average of request duration, for Retry-After

    @property
    def depth(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        return len(self._waiters) >= self._max

    async def wait(
        self,
        try_take: Callable[[], T | None],
        *,
        priority: int,
        timeout: float,
        give_back: Callable[[T], None],
    ) -> T | None:
        """What try_take returned once it succeeded, or None if the queue is full or time ran out.

        give_back returns a slot that was granted to a waiter cancelled in the same instant.
        """
        if self.full or timeout <= 0:
            return None
        waiter: _Waiter[T] = _Waiter(priority, next(self._seq), try_take)
        self._waiters.append(waiter)
        self.notify()  # a slot may be free for this waiter (others wait for another model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while waiter.result is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                # asyncio.wait, not wait_for: wait_for can swallow a cancellation that races
                # with the event (Python < 3.12), leaving a gone client holding a slot.
                signal = asyncio.ensure_future(waiter.event.wait())
                try:
                    await asyncio.wait({signal}, timeout=min(remaining, _POLL_S))
                finally:
                    signal.cancel()
                if waiter.result is None:
                    self.notify()
        except asyncio.CancelledError:
            if waiter.result is not None:
                give_back(waiter.result)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return waiter.result

    def notify(self) -> None:
        """Hand free slots to waiters, best priority first."""
        for waiter in sorted(self._waiters):
            if waiter.result is not None:
                continue
            taken = waiter.try_take()
            if taken is not None:
                waiter.result = taken
                self._waiters.remove(waiter)
                waiter.event.set()

    def record_service_time(self, seconds: float) -> None:
        self._service_s = 0.9 * self._service_s + 0.1 * max(seconds, 0.0)

    def retry_after(self, capacity: int) -> float:
        """Seconds until the queue ahead of a new request has likely drained (at least 1)."""
        return float(max(1, math.ceil((self.depth + 1) * self._service_s / max(capacity, 1))))
