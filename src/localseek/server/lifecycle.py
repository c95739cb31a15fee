"""One client request's life after validation: admit, run its engine jobs, release its slots."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response

from localseek.engine.outputs import RequestOutput
from localseek.errors import DrainingError
from localseek.server.admission import Ticket
from localseek.server.drain import DRAIN_RETRY_AFTER_S
from localseek.server.fanout import FanOut, Job
from localseek.server.request_options import request_options
from localseek.server.sampling import make_ticket
from localseek.server.state import ServerState
from localseek.server.streaming import EventStreamResponse, unless_disconnected


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class RequestRun:
    """Admission ticket + engine fan-out of one request; `release()` is idempotent."""

    def __init__(self, state: ServerState, ticket: Ticket, fanout: FanOut):
        self._state = state
        self.ticket = ticket
        self.fanout = fanout
        self._released = False

    @classmethod
    async def admit(
        cls,
        state: ServerState,
        request: Request,
        jobs: list[Job],
        *,
        request_id: str,
        body_priority: int | None,
    ) -> RequestRun:
        """Wait for an engine slot (or raise OverloadedError at once, 429; DrainingError, 503)."""
        if state.drain.active:
            raise DrainingError(
                "the server is shutting down and takes no new requests; retry on another replica",
                retry_after=DRAIN_RETRY_AFTER_S,
            )
        arrival = time.monotonic()
        engine = state.engine
        gate = state.gate
        assert gate is not None  # attached together with the engine
        options = request_options(request.headers, body_priority, state.config)
        ticket = make_ticket(
            request_id, jobs, priority=options.priority, timeout=options.timeout, now=arrival
        )
        await gate.enter(ticket)
        fanout = FanOut(
            engine,
            jobs,
            request_id=request_id,
            priority=options.priority,
            metrics=state.metrics,
            arrival=arrival,
        )
        return cls(state, ticket, fanout)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self.fanout.close()
        assert self._state.gate is not None
        self._state.gate.leave(self.ticket, self.fanout.cost_done())

    async def collect(self, request: Request) -> dict[int, RequestOutput]:
        """Every job's final output; the jobs are aborted if the client leaves first."""
        try:
            return await unless_disconnected(request, self.fanout.collect())
        finally:
            await self.release()

    def stream(self, events: Callable[[RequestRun], AsyncIterator[str]]) -> Response:
        return EventStreamResponse(events(self), on_close=self.release)
