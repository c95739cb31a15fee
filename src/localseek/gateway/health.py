"""Active health checks: probes each upstream's /health and reads its /load on an interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from localseek.api.load import LoadReport
from localseek.gateway.config import HealthConfig
from localseek.gateway.server_kinds import SERVER_KINDS
from localseek.gateway.upstream import Upstream

log = logging.getLogger(__name__)


class HealthMonitor:
    """Runs probe rounds; a failed probe counts like a failed request, a good one closes the
    circuit once its open period is over (the half-open test)."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        config: HealthConfig,
        on_change: Callable[[], None],
    ):
        self._upstreams = [u for u in upstreams if u.config.probes]
        self._config = config
        self._on_change = on_change
        self._no_load: set[str] = set()  # upstreams without a /load endpoint
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """One round now (reporting unreachable upstreams, which is not fatal), then periodic."""
        results = await self.probe_all()
        for upstream, ok in zip(self._upstreams, results, strict=True):
            if not ok:
                log.warning(
                    "upstream %s (%s) is not healthy at start (circuit %s); it is probed every "
                    "%.1fs and its circuit opens after %d failures in a row",
                    upstream.name,
                    upstream.config.url,
                    upstream.circuit.state,
                    self._config.interval_s,
                    self._config.failure_threshold,
                )
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.interval_s)
            await self.probe_all()

    async def probe_all(self) -> list[bool]:
        results = await asyncio.gather(*(self.probe(u) for u in self._upstreams))
        self._on_change()
        return list(results)

    async def probe(self, upstream: Upstream) -> bool:
        timeout = self._config.probe_timeout_s
        kind = SERVER_KINDS[upstream.config.server]
        url = upstream.config.health_url or upstream.config.root_url + kind.health_path
        try:
            response = await upstream.client.get(url, timeout=timeout)
            ok = response.status_code < 400
        except httpx.HTTPError:
            ok = False
        if not ok:
            upstream.circuit.record_failure()
            return False
        upstream.circuit.probe_succeeded()
        if upstream.name not in self._no_load and not upstream.is_cloud:
            await self._read_load(upstream, timeout)
        return True

    async def _read_load(self, upstream: Upstream, timeout: float) -> None:
        kind = SERVER_KINDS[upstream.config.server]
        if kind.load_path is None or kind.parse_load is None:
            return  # no load signal: routing uses the gateway's own in-flight count
        url = upstream.config.load_url or upstream.config.root_url + kind.load_path
        try:
            response = await upstream.client.get(url, timeout=timeout)
        except httpx.HTTPError:
            return
        if response.status_code == 404:
            self._no_load.add(upstream.name)  # metrics or /load are off: in-flight only
            return
        parsed = kind.parse_load(response) if response.status_code == 200 else None
        if parsed is not None:
            upstream.set_report(*parsed)


def parse_load(body: Any) -> tuple[int, int] | None:
    """(running + waiting, capacity) from a localseek /load body (api/load.py), or None."""
    report = LoadReport.read(body)
    return None if report is None else (report.queued, report.capacity)
