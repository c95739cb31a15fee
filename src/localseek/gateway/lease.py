"""Lease: one upstream slot held by one attempt; the only thing that gives the slot back."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Protocol

from localseek.gateway.upstream import Upstream
from localseek.ops.metrics.gateway import GatewayMetrics


class SlotPool(Protocol):
    """Where a lease returns its slot (the dispatcher: it also wakes queued requests)."""

    def release(self, upstream: Upstream) -> None: ...

    def record_service_time(self, seconds: float) -> None: ...


class Lease:
    """A slot on `upstream`, from acquisition until `close()` (or the end of `async with`).

    The holder records at most one verdict on the attempt: `ok()` (a complete answer), `failed()`
    (the upstream's fault: connect error, timeout, 5xx, 429, a cut stream) or `rejected()` (the
    upstream answered 4xx: the client's request is at fault, the replica is healthy). Closing
    without a verdict (the client left, or the gateway failed before an answer) counts against
    neither: a half-open circuit's trial is simply returned. Closing twice is harmless, so every
    path may close: the slot comes back exactly once.
    """

    def __init__(self, upstream: Upstream, pool: SlotPool, metrics: GatewayMetrics):
        self.upstream = upstream
        self.started = time.monotonic()
        self._pool = pool
        self._metrics = metrics
        self._verdict: str | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def ok(self) -> None:
        if self._decide("ok"):
            elapsed = time.monotonic() - self.started
            self.upstream.circuit.record_success()
            self._metrics.upstream_latency.labels(self.upstream.name).observe(elapsed)
            self._pool.record_service_time(elapsed)

    def failed(self, kind: str, retry_after: float | None = None) -> None:
        """The upstream's fault; `kind` is a bounded label (connect, timeout, status_5xx...)."""
        if self._decide("error"):
            self.upstream.circuit.record_failure(retry_after if kind == "status_429" else None)
            self._metrics.upstream_errors.labels(self.upstream.name, kind).inc()

    def rejected(self) -> None:
        """The upstream refused the request (4xx other than 429): it is alive and answering."""
        if self._decide("rejected"):
            self.upstream.circuit.record_success()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._verdict is None:
            self.upstream.circuit.cancel_trial()
            self._verdict = "cancelled"
            self._metrics.upstream_requests.labels(self.upstream.name, "cancelled").inc()
        self._pool.release(self.upstream)

    def _decide(self, verdict: str) -> bool:
        if self._verdict is not None or self._closed:
            return False
        self._verdict = verdict
        self._metrics.upstream_requests.labels(self.upstream.name, verdict).inc()
        return True

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
