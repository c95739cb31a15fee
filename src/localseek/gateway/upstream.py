"""One upstream: its HTTP client, circuit breaker, in-flight count and reported load."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from localseek.errors import ConfigError
from localseek.gateway.circuit import CircuitBreaker
from localseek.gateway.config import DispatchConfig, HealthConfig, UpstreamConfig


@dataclass(frozen=True)
class LoadSnapshot:
    """What an upstream's /load said, and the gateway's own in-flight count at that moment."""

    queued: int  # running + waiting requests on the upstream (from every gateway)
    capacity: int | None  # the upstream's own concurrent-sequence limit, if it reports one
    in_flight_at_report: int
    at: float  # clock time of the report


class Upstream:
    """An OpenAI-compatible server behind the gateway.

    Load combines two views so that neither lag nor drift misleads routing: the upstream's
    /load report (which sees other gateways' traffic but is up to one probe interval old) plus
    the change in this gateway's own in-flight count since that report.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        health: HealthConfig,
        admission: DispatchConfig,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.config = config
        self.name = config.name
        self.circuit = CircuitBreaker(health, clock)
        self.in_flight = 0
        self.report: LoadSnapshot | None = None
        self._clock = clock
        self._report_ttl = 3 * health.interval_s
        headers = {}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(
                    f"upstream {config.name!r}: environment variable {config.api_key_env} "
                    "(api_key_env) is not set",
                    param="api_key_env",
                )
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(admission.request_timeout_s, connect=admission.connect_timeout_s)
        limits = httpx.Limits(
            max_connections=config.max_concurrency + 8,
            max_keepalive_connections=config.max_concurrency,
        )
        self.client = httpx.AsyncClient(
            headers=headers, timeout=timeout, limits=limits, transport=transport
        )

    @property
    def is_cloud(self) -> bool:
        return self.config.kind == "cloud"

    @property
    def capacity(self) -> int:
        reported = self.report.capacity if self.report and self._report_fresh() else None
        if reported:
            return min(self.config.max_concurrency, reported)
        return self.config.max_concurrency

    def load(self) -> int:
        """Estimated requests running or waiting on this upstream now."""
        if self.report is None or not self._report_fresh():
            return self.in_flight
        since = self.in_flight - self.report.in_flight_at_report
        return max(self.in_flight, self.report.queued + since)

    def saturated(self) -> bool:
        return self.load() >= self.capacity

    def usable(self) -> bool:
        return self.circuit.allows() and not self.saturated()

    def acquire(self) -> None:
        self.in_flight += 1
        self.circuit.on_send()

    def release(self) -> None:
        assert self.in_flight > 0, "release without acquire"
        self.in_flight -= 1

    def set_report(self, queued: int, capacity: int | None) -> None:
        self.report = LoadSnapshot(queued, capacity, self.in_flight, self._clock())

    def url(self, route: str) -> str:
        return f"{self.config.url.rstrip('/')}/{route}"

    def _report_fresh(self) -> bool:
        assert self.report is not None
        return self._clock() - self.report.at <= self._report_ttl

    async def aclose(self) -> None:
        await self.client.aclose()
