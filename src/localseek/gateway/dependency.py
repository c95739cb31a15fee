"""Redis as a dependency that may fail: the cache is skipped and limits fall back, never a 500.

`Dependency` remembers whether Redis answered lately. After a failure it is left alone for
`retry_s` (a dead Redis costs one fast error, not a timeout on every request), then the next
call tries again: the gateway reconnects on its own. `/health` reports `degraded` meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from localseek.errors import ServiceUnavailableError
from localseek.gateway.limits import Bucket, BucketStore
from localseek.ops.metrics.gateway import GatewayMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

ON_REDIS_ERROR = ("allow", "deny", "local")
_RETRY_S = 1.0  # how long a failed Redis is left alone before the next call tries it


class Dependency:
    """Up/down state of one shared dependency, with a cool-down after each failure."""

    def __init__(
        self,
        name: str,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = _RETRY_S,
    ):
        self.name = name
        self._metrics = metrics
        self._clock = clock
        self._retry_s = retry_s
        self._retry_at: float | None = None  # None: up
        self._errors = _error_types()
        metrics.dependency_up.labels(name).set(1)

    @property
    def up(self) -> bool:
        return self._retry_at is None

    def usable(self) -> bool:
        return self._retry_at is None or self._clock() >= self._retry_at

    async def call(self, component: str, fn: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) if the dependency answered; (False, None) if it is down."""
        if not self.usable():
            return False, None
        try:
            result = await fn()
        except self._errors as exc:
            self._failed(component, exc)
            return False, None
        if self._retry_at is not None:
            log.warning("%s answers again; leaving degraded mode", self.name)
            self._metrics.dependency_up.labels(self.name).set(1)
        self._retry_at = None
        return True, result

    def _failed(self, component: str, exc: BaseException) -> None:
        if self._retry_at is None:
            log.warning(
                "%s failed (%s: %s); %s runs degraded until it answers",
                self.name,
                type(exc).__name__,
                exc,
                component,
            )
        self._metrics.dependency_errors.labels(self.name, component).inc()
        self._metrics.dependency_up.labels(self.name).set(0)
        self._retry_at = self._clock() + self._retry_s


class GuardedCache:
    """A Redis cache backend whose failures are misses (get) and skipped writes (set)."""

    def __init__(self, backend: Any, dependency: Dependency):
        self._backend = backend
        self._dependency = dependency

    async def get(self, key: str) -> bytes | None:
        _, value = await self._dependency.call("cache", lambda: self._backend.get(key))
        return value

    async def set(self, key: str, value: bytes) -> None:
        await self._dependency.call("cache", lambda: self._backend.set(key, value))

    async def ping(self) -> None:
        await self._dependency.call("cache", self._backend.ping)

    async def aclose(self) -> None:
        await self._backend.aclose()


class GuardedBuckets:
    """Redis token buckets; while Redis is down, `on_redis_error` decides.

    allow: admit without a limit; deny: refuse with 503; local: this process's own buckets
    (each gateway replica then enforces the whole limit on its own share of traffic).
    """

    def __init__(self, redis: Any, fallback: BucketStore, on_error: str, dependency: Dependency):
        assert on_error in ON_REDIS_ERROR
        self._redis = redis
        self._fallback = fallback
        self._on_error = on_error
        self._dependency = dependency

    async def take(self, buckets: list[tuple[Bucket, float]]) -> float:
        ok, wait = await self._dependency.call("limits", lambda: self._redis.take(buckets))
        if ok:
            return float(wait or 0.0)
        if self._on_error == "allow":
            return 0.0
        if self._on_error == "deny":
            raise ServiceUnavailableError(
                "rate limits cannot be checked: redis is unreachable (limits.on_redis_error: deny)"
            )
        return await self._fallback.take(buckets)

    async def adjust(self, bucket: Bucket, delta: float) -> None:
        ok, _ = await self._dependency.call("limits", lambda: self._redis.adjust(bucket, delta))
        if not ok and self._on_error == "local":
            await self._fallback.adjust(bucket, delta)

    async def ping(self) -> None:
        await self._dependency.call("limits", self._redis.ping)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _error_types() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)
