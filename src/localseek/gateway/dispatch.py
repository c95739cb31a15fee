"""Getting a slot on an upstream: local first, then cloud overflow, then the admission queue."""

from __future__ import annotations

import asyncio

from localseek.errors import OverloadedError
from localseek.gateway.balancer import Balancer, RouteRequest
from localseek.gateway.circuit import OPEN
from localseek.gateway.config import DispatchConfig
from localseek.gateway.lease import Lease
from localseek.gateway.request import GatewayRequest
from localseek.gateway.slot_queue import SlotQueue
from localseek.gateway.upstream import Upstream
from localseek.ops.metrics.gateway import GatewayMetrics


class NoUpstreamLeft(Exception):
    """Every upstream that could serve the request has already been tried by it."""


class Dispatcher:
    """Finds an upstream for a request and hands it out as a Lease, which alone releases it.

    Order: a free local slot (unless others already wait for one: no queue jumping); for a
    cloud-eligible request, a cloud upstream (after waiting overflow_after_s for local, if set);
    a trial on a local upstream whose circuit is open when every local one is (never refuse
    everything because all cooled down at once); else wait in the bounded queue, or 429.
    A local-only request never reaches pick_cloud.
    """

    def __init__(
        self,
        balancer: Balancer,
        queue: SlotQueue[Upstream],
        config: DispatchConfig,
        metrics: GatewayMetrics,
    ):
        self.balancer = balancer
        self.queue = queue
        self._config = config
        self._metrics = metrics

    def capacity(self) -> int:
        return sum(u.capacity for tier in self.balancer.local_tiers for u in tier)

    async def acquire(
        self, req: GatewayRequest, exclude: frozenset[str], *, needs_continuation: bool = False
    ) -> Lease:
        """A held slot on the chosen upstream; raises OverloadedError or NoUpstreamLeft."""
        chosen = await self._choose(
            req, RouteRequest(req.model, req.affinity_key, exclude, needs_continuation)
        )
        # No await between the balancer counting the slot and the lease owning it.
        return Lease(chosen, self, self._metrics)

    async def _choose(self, req: GatewayRequest, route: RouteRequest) -> Upstream:
        if self.queue.depth == 0:
            chosen = self.balancer.pick_local(route)
            if chosen is not None:
                return chosen
        remaining = req.deadline - asyncio.get_running_loop().time()
        if req.cloud_ok and self._config.overflow and self.balancer.has_cloud(route):
            if self._config.overflow_after_s > 0:
                chosen = await self._wait(route, req, min(self._config.overflow_after_s, remaining))
                if chosen is not None:
                    return chosen
            chosen = self.balancer.pick_cloud(route)
            if chosen is not None:
                self._metrics.overflowed.labels(req.tenant.name).inc()
                self._metrics.overflow_reasons.labels(self._overflow_reason()).inc()
                return chosen
        chosen = self.balancer.pick_local(route, last_resort=True)
        if chosen is not None:
            return chosen
        if not self.balancer.has_local(route):
            raise NoUpstreamLeft()
        full = self.queue.full
        chosen = await self._wait(route, req, min(self._config.max_queue_wait_s, remaining))
        if chosen is not None:
            return chosen
        reason = "queue_full" if full else "queue_timeout"
        self._metrics.shed.labels(req.tenant.name, reason).inc()
        raise OverloadedError(
            f"no local upstream for model {req.model!r} has a free slot "
            f"({'the wait queue is full' if full else 'waited too long'}); retry later",
            retry_after=self.queue.retry_after(self.capacity()),
        )

    async def _wait(
        self, route: RouteRequest, req: GatewayRequest, timeout: float
    ) -> Upstream | None:
        self._metrics.queue_depth.set(self.queue.depth + 1)
        try:
            return await self.queue.wait(
                lambda: self.balancer.pick_local(route, last_resort=True),
                priority=req.tenant.priority,
                timeout=timeout,
                # A slot granted in the instant its waiter was cancelled: returned unused.
                give_back=lambda upstream: Lease(upstream, self, self._metrics).close(),
            )
        finally:
            self._metrics.queue_depth.set(self.queue.depth)

    def _overflow_reason(self) -> str:
        local = [u for tier in self.balancer.local_tiers for u in tier]
        return "local_full" if any(u.circuit.state != OPEN for u in local) else "local_down"

    def release(self, upstream: Upstream) -> None:
        """Called by Lease.close only."""
        upstream.release()
        self.queue.notify()

    def record_service_time(self, seconds: float) -> None:
        self.queue.record_service_time(seconds)
