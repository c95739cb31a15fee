"""Graceful drain: on SIGTERM stop admitting (503 + Retry-After), finish in-flight work, then exit.

An orchestrator stops a replica with SIGTERM and kills it after a grace period. Until the
listening socket closes, a load balancer may still send it requests: they get a 503 with
`Retry-After` (a gateway retries them on another replica), /health turns not-ready so the
replica leaves its Service, and every request already admitted — running or waiting for a
slot — is answered before the process exits 0. A second SIGTERM or Ctrl-C exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)

DRAIN_RETRY_AFTER_S = 1.0  # a draining replica never comes back; another one will answer
_POLL_S = 0.05


class Drain:
    """Whether this server is draining, and since when; read by admission and /health."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def begin(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains instead of closing the socket at once.

    `in_flight` counts admitted requests (running + waiting); the drain ends when it reaches
    zero or `timeout_s` passes, whichever is first, and then uvicorn's ordinary shutdown
    finishes the responses being written.
    """

    def __init__(
        self, config: uvicorn.Config, drain: Drain, in_flight: Callable[[], int], timeout_s: float
    ):
        super().__init__(config)
        self._drain = drain
        self._in_flight = in_flight
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._drain.active and self._loop is not None:
            # Not recorded in uvicorn's captured signals: uvicorn would re-raise it after the
            # shutdown and the process would die of SIGTERM instead of exiting 0.
            self._drain.begin()
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        logger.info("SIGTERM: draining %d in-flight request(s)", self._in_flight())
        while self._in_flight() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        left = self._in_flight()
        if left:
            logger.warning("drain deadline passed with %d request(s) unfinished", left)
        else:
            logger.info("drained; shutting down")
        self.should_exit = True
