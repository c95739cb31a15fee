"""AdmissionGate: the asyncio side of admission (waiters, deadline timers, freed slots).

The policy lives in `admission.AdmissionQueue`; this class only turns its decisions into
awaits and errors. Everything runs on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from localseek.errors import OverloadedError
from localseek.server.admission import AdmissionQueue, Refusal, Ticket

# A refused ticket's error code: DeepSeek and OpenAI clients branch on `code`.
_CODES = {
    "queue_full": "server_overloaded",
    "queue_tokens": "server_overloaded",
    "deadline": "server_overloaded",
    "displaced": "server_overloaded",
    "expired": "request_timeout",
}


def overloaded(refusal: Refusal) -> OverloadedError:
    return OverloadedError(
        f"server busy: {refusal.message}; retry after {refusal.retry_after:.0f}s",
        retry_after=refusal.retry_after,
        code=_CODES.get(refusal.reason, "server_overloaded"),
    )


class AdmissionGate:
    """`async with gate.admit(ticket)`-style entry and exit around one request's engine work."""

    def __init__(self, queue: AdmissionQueue, on_refused: Callable[[str], None] | None = None):
        self.queue = queue
        self._on_refused = on_refused or (lambda reason: None)
        self._waiters: dict[Ticket, asyncio.Future] = {}

    def refuse_early(self, priority: int, slots: int) -> None:
        """Raise OverloadedError now if the request will be refused whatever it costs: before
        the chat template is rendered and the prompt tokenized, so a full server answers its
        429 in microseconds, not after a busy worker thread gets to it."""
        self._fail_all(self.queue.expire())
        refusal = self.queue.certain_refusal(priority, slots)
        if refusal is not None:
            self._on_refused(refusal.reason)
            raise overloaded(refusal)

    async def enter(self, ticket: Ticket) -> None:
        """Return once the ticket holds its slots; raise OverloadedError if refused."""
        self._fail_all(self.queue.expire())
        decision = self.queue.offer(ticket)
        self._fail_all(decision.displaced)
        if decision.refusal is not None:
            self._on_refused(decision.refusal.reason)
            raise overloaded(decision.refusal)
        if decision.started:
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiters[ticket] = future
        timer = None
        if math.isfinite(ticket.deadline):
            delay = max(0.0, ticket.deadline - self.queue.now()) + 0.01
            timer = loop.call_later(delay, self._expire)
        try:
            await future
        except asyncio.CancelledError:
            # The client left: withdraw the ticket, or hand back slots granted in this instant.
            if not self.queue.cancel(ticket) and future.done() and not future.cancelled():
                if future.exception() is None:
                    self.leave(ticket, cost_done=0)
            raise
        finally:
            self._waiters.pop(ticket, None)
            if timer is not None:
                timer.cancel()

    def leave(self, ticket: Ticket, cost_done: float | None = None) -> None:
        """The ticket's engine work is over: free its slots and start whoever can start."""
        self.queue.release(ticket, cost_done)
        self._start_waiters()

    def _start_waiters(self) -> None:
        orphans = True
        while orphans:
            orphans = False
            for started in self.queue.pop_startable():
                future = self._waiters.get(started)
                if future is not None and not future.done():
                    future.set_result(None)
                else:
                    # Nobody waits on it any more: give its slots straight back.
                    self.queue.release(started, cost_done=0)
                    orphans = True

    def _expire(self) -> None:
        self._fail_all(self.queue.expire())

    def _fail_all(self, refused: list[tuple[Ticket, Refusal]] | tuple) -> None:
        for ticket, refusal in refused:
            self._on_refused(refusal.reason)
            future = self._waiters.get(ticket)
            if future is not None and not future.done():
                future.set_exception(overloaded(refusal))
