"""Per-tenant requests/min and tokens/min token buckets, in memory or shared through Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from localseek.errors import RateLimitError
from localseek.gateway.config import TenantConfig

# A Redis that stops answering costs a request this long at most, once (dependency.py then
# leaves it alone for a while); a healthy one answers in well under a millisecond.
REDIS_TIMEOUTS = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0}


@dataclass(frozen=True)
class Bucket:
    """One token bucket: `capacity` tokens, refilled at `rate` tokens per second."""

    key: str
    capacity: float
    rate: float


class BucketStore(Protocol):
    async def take(self, buckets: list[tuple[Bucket, float]]) -> float:
        """Take every amount at once, or none: 0.0 if granted, else seconds to wait."""

    async def adjust(self, bucket: Bucket, delta: float) -> None:
        """Take `delta` more (negative: give back), capped at capacity; may go below zero."""


class MemoryBucketStore:
    """Buckets in this process: right for one gateway replica only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _level(self, b: Bucket, now: float) -> float:
        tokens, at = self._levels.get(b.key, (b.capacity, now))
        return min(b.capacity, tokens + (now - at) * b.rate)

    async def take(self, buckets: list[tuple[Bucket, float]]) -> float:
        now = self._clock()
        wait = 0.0
        levels = [self._level(b, now) for b, _ in buckets]
        for (b, amount), level in zip(buckets, levels, strict=True):
            # A request larger than the whole bucket may start when the bucket is full.
            need = min(amount, b.capacity)
            if level < need:
                wait = max(wait, (need - level) / b.rate)
        if wait > 0:
            return wait
        for (b, amount), level in zip(buckets, levels, strict=True):
            self._levels[b.key] = (level - amount, now)
        return 0.0

    async def adjust(self, bucket: Bucket, delta: float) -> None:
        now = self._clock()
        self._levels[bucket.key] = (min(bucket.capacity, self._level(bucket, now) - delta), now)


# Check-and-take in one atomic step on the Redis server (its clock, not the gateways'), so N
# gateway replicas share one limit instead of N.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local levels = {}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[3*i-2])
  local cap = tonumber(ARGV[3*i-1])
  local rate = tonumber(ARGV[3*i])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(v[1])
  local ts = tonumber(v[2])
  if tokens == nil then tokens = cap; ts = now end
  tokens = math.min(cap, tokens + (now - ts) * rate)
  levels[i] = tokens
  local need = math.min(amount, cap)
  if tokens < need then
    local w = (need - tokens) / rate
    if w > wait then wait = w end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, #KEYS do
  local cap = tonumber(ARGV[3*i-1])
  local rate = tonumber(ARGV[3*i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - tonumber(ARGV[3*i-2])), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[i], math.ceil(cap / rate) + 60)
end
return '0'
"""

_ADJUST_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil then tokens = cap; ts = now end
tokens = math.min(cap, math.min(cap, tokens + (now - ts) * rate) - tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 60)
return 'ok'
"""


class RedisBucketStore:
    """Buckets in Redis, shared by every gateway replica pointing at the same server."""

    def __init__(self, url: str, prefix: str = "localseek:limits:"):
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, **REDIS_TIMEOUTS)
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE_LUA)
        self._adjust = self._redis.register_script(_ADJUST_LUA)

    async def take(self, buckets: list[tuple[Bucket, float]]) -> float:
        keys = [self._prefix + b.key for b, _ in buckets]
        args: list[float] = []
        for b, amount in buckets:
            args += [amount, b.capacity, b.rate]
        return float(await self._take(keys=keys, args=args))

    async def adjust(self, bucket: Bucket, delta: float) -> None:
        await self._adjust(
            keys=[self._prefix + bucket.key], args=[bucket.capacity, bucket.rate, delta]
        )

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    """Admits a request against its tenant's buckets; reconciles tokens once usage is known."""

    def __init__(self, store: BucketStore):
        self.store = store

    async def admit(self, tenant: TenantConfig, estimated_tokens: int) -> None:
        """Raises RateLimitError (429 + Retry-After) when a per-minute limit is exhausted."""
        wanted: list[tuple[Bucket, float]] = []
        if tenant.requests_per_minute:
            wanted.append((_bucket(tenant.name, "rpm", tenant.requests_per_minute), 1.0))
        if tenant.tokens_per_minute:
            wanted.append((_bucket(tenant.name, "tpm", tenant.tokens_per_minute), estimated_tokens))
        if not wanted:
            return
        wait = await self.store.take(wanted)
        if wait > 0:
            raise RateLimitError(
                f"tenant {tenant.name!r} exceeded its per-minute limit "
                f"(requests_per_minute={tenant.requests_per_minute}, "
                f"tokens_per_minute={tenant.tokens_per_minute}); retry in {wait:.1f}s",
                retry_after=wait,
            )

    async def reconcile(self, tenant: TenantConfig, estimated: int, actual: int) -> None:
        """Charge the difference between the tokens estimated at admission and those used."""
        if tenant.tokens_per_minute and actual != estimated:
            bucket = _bucket(tenant.name, "tpm", tenant.tokens_per_minute)
            await self.store.adjust(bucket, float(actual - estimated))


def _bucket(tenant: str, kind: str, per_minute: int) -> Bucket:
    return Bucket(f"{tenant}:{kind}", float(per_minute), per_minute / 60.0)
