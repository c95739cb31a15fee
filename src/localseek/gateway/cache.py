"""Response cache: exact match on the canonical request, scoped per tenant; memory LRU or Redis."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from localseek.gateway.config import ResponseCacheConfig

# Fields that change how an answer is delivered or labelled, never what it says. Everything else
# (max_tokens, stop, tools, tool_choice, response_format, seed, logprobs, unknown extensions...)
# is part of the key, so a new output-affecting field can never be silently ignored.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})


def is_deterministic(body: dict[str, Any]) -> bool:
    """temperature 0, or a fixed seed. An absent temperature means OpenAI's default of 1.0."""
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if temperature == 0:
            return True
    seed = body.get("seed")
    return isinstance(seed, int) and not isinstance(seed, bool)


def cache_key(route: str, body: dict[str, Any], tenant: str, namespace: str) -> str:
    """A key that is equal exactly when the output-affecting request is equal, per tenant.

    JSON is canonicalised (sorted keys, no whitespace, numbers as parsed) so key order and
    formatting never split one request into two entries.
    """
    fields = {k: v for k, v in body.items() if k not in _DELIVERY_FIELDS}
    canonical = json.dumps(
        [namespace, route, tenant, fields],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...


class MemoryCacheBackend:
    """An LRU with a byte budget and a TTL, in this process."""

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._max_bytes = max_bytes
        self._ttl = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = (
            OrderedDict()
        )  # key -> (value, expiry)
        self.bytes_used = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        if len(value) > self._max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, self._clock() + self._ttl)
        self.bytes_used += len(value)
        while self.bytes_used > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.bytes_used -= len(value)


class RedisCacheBackend:
    """Entries in Redis with a TTL, shared by every gateway replica.

    Size is bounded by the Redis server: run it with `maxmemory` and `maxmemory-policy
    allkeys-lru` (the deployment templates do).
    """

    def __init__(self, url: str, ttl_s: float, prefix: str = "localseek:cache:"):
        import redis.asyncio as aioredis

        from localseek.gateway.limits import REDIS_TIMEOUTS

        self._redis = aioredis.Redis.from_url(url, **REDIS_TIMEOUTS)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        return await self._redis.get(self._prefix + key)

    async def set(self, key: str, value: bytes) -> None:
        await self._redis.set(self._prefix + key, value, px=self._ttl_ms)

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


class ResponseCache:
    """Decides what is cacheable and stores complete (non-streamed) OpenAI responses."""

    def __init__(self, config: ResponseCacheConfig, backend: CacheBackend):
        self.config = config
        self.backend = backend

    def key_for(self, route: str, body: dict[str, Any], tenant: str) -> str | None:
        """The request's cache key, or None if it must not be cached."""
        if not self.config.enabled:
            return None
        if not (self.config.cache_nondeterministic or is_deterministic(body)):
            return None
        return cache_key(route, body, tenant, self.config.namespace)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.backend.get(key)
        return None if raw is None else json.loads(raw)

    async def put(self, key: str, response: dict[str, Any]) -> int:
        """Store a response; returns the bytes written."""
        raw = json.dumps(response, separators=(",", ":"), ensure_ascii=False).encode()
        await self.backend.set(key, raw)
        return len(raw)
