"""FastAPI app factory for the gateway: routes, error mapping, /health and /metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from localseek.api.body_limit import BodyLimitMiddleware
from localseek.api.errors import install_error_handlers
from localseek.api.event_stream import EventStreamResponse
from localseek.errors import LocalseekError
from localseek.gateway.balancer import Balancer
from localseek.gateway.cache import (
    CacheBackend,
    MemoryCacheBackend,
    RedisCacheBackend,
    ResponseCache,
)
from localseek.gateway.circuit import STATE_VALUES
from localseek.gateway.config import GatewayConfig
from localseek.gateway.dependency import Dependency, GuardedBuckets, GuardedCache
from localseek.gateway.dispatch import Dispatcher
from localseek.gateway.health import HealthMonitor
from localseek.gateway.limits import BucketStore, MemoryBucketStore, RateLimiter, RedisBucketStore
from localseek.gateway.proxy import Forwarder, UpstreamRejected
from localseek.gateway.service import GatewayService, Reply
from localseek.gateway.slot_queue import SlotQueue
from localseek.gateway.tenants import TenantDirectory
from localseek.gateway.ui_status import gateway_ui_status
from localseek.gateway.upstream import Upstream
from localseek.gateway.usage_ledger import open_ledger
from localseek.ops.metrics.gateway import GatewayMetrics
from localseek.ui.routes import install_ui

TransportFactory = Callable[[str], httpx.AsyncBaseTransport | None]


def create_app(config: GatewayConfig, *, transport: TransportFactory | None = None) -> FastAPI:
    """Build every gateway object from the config; raises ConfigError before serving anything."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    upstreams = [
        Upstream(
            u,
            config.health,
            config.admission,
            time.monotonic,
            transport(u.name) if transport else None,
        )
        for u in config.upstreams
    ]
    tenants = TenantDirectory(config.tenants)
    balancer = Balancer(upstreams, config.balancer)
    queue: SlotQueue[Upstream] = SlotQueue(config.admission.max_queue)
    dispatcher = Dispatcher(balancer, queue, config.admission, metrics)
    forwarder = Forwarder(dispatcher, config.admission, metrics)
    redis = Dependency("redis", metrics)
    cache = ResponseCache(config.cache, _cache_backend(config, redis))
    limiter = RateLimiter(_bucket_store(config, redis))
    ledger = open_ledger(config.usage.path)
    service = GatewayService(
        config, upstreams, dispatcher, forwarder, cache, limiter, tenants, metrics, ledger
    )
    health = HealthMonitor(upstreams, config.health, queue.notify)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await health.start()
        try:
            yield
        finally:
            await health.stop()
            for u in upstreams:
                await u.aclose()
            ledger.close()
            for closable in (cache.backend, limiter.store):
                if hasattr(closable, "aclose"):
                    await closable.aclose()

    app = FastAPI(title="localseek gateway", lifespan=lifespan)
    app.state.service = service
    app.state.upstreams = upstreams

    install_error_handlers(app)

    @app.exception_handler(UpstreamRejected)
    async def _rejected(_: Request, exc: UpstreamRejected) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    async def completion(route: str, request: Request) -> Response:
        status = 500
        try:
            reply = await service.handle(route, await request.body(), dict(request.headers))
            status = reply.status
            return _to_response(reply)
        except (LocalseekError, UpstreamRejected) as exc:
            status = exc.http_status if isinstance(exc, LocalseekError) else exc.status
            raise
        finally:
            metrics.requests.labels(route, str(status)).inc()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await completion("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await completion("completions", request)

    @app.get("/v1/models")
    async def models() -> dict:
        ids: list[str] = []
        for u in config.upstreams:
            for model in (*u.models, *u.model_map):
                if model not in ids:
                    ids.append(model)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "localseek"} for m in ids]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def healthz() -> dict:
        states = [
            {
                "name": u.name,
                "kind": u.config.kind,
                "backup": u.config.backup,
                "circuit": u.circuit.state,
                "in_flight": u.in_flight,
                "load": u.load(),
                "capacity": u.capacity,
            }
            for u in upstreams
        ]
        usable = any(s["circuit"] != "open" for s in states if s["kind"] == "local")
        for guarded in (cache.backend, limiter.store):
            if not redis.up and isinstance(guarded, GuardedCache | GuardedBuckets):
                await guarded.ping()  # reconnects on its own; the ping says whether it has
        reply: dict = {"status": "ok" if usable and redis.up else "degraded", "upstreams": states}
        if _uses_redis(config):
            reply["redis"] = "up" if redis.up else "down"
        return reply

    @app.get("/metrics")
    async def prometheus() -> Response:
        for u in upstreams:
            metrics.circuit_state.labels(u.name).set(STATE_VALUES[u.circuit.state])
            metrics.in_flight.labels(u.name).set(u.in_flight)
        metrics.queue_depth.set(queue.depth)
        metrics.affinity_entries.set(len(balancer.affinity))
        if isinstance(cache.backend, MemoryCacheBackend):
            metrics.cache_bytes.set(cache.backend.bytes_used)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    install_ui(
        app,
        "gateway",
        lambda: gateway_ui_status(upstreams, queue, registry),
        lambda request: tenants.resolve(request.headers.get("authorization")),
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    return app


def _to_response(reply: Reply) -> Response:
    if reply.stream is not None:
        return EventStreamResponse(reply.stream, on_close=reply.close, headers=reply.headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def _uses_redis(config: GatewayConfig) -> bool:
    return "redis" in (config.cache.backend, config.limits.backend)


def _cache_backend(config: GatewayConfig, redis: Dependency) -> CacheBackend:
    if config.cache.backend == "redis":
        backend = RedisCacheBackend(config.redis_url_for(config.cache), config.cache.ttl_s)
        return GuardedCache(backend, redis)
    return MemoryCacheBackend(config.cache.max_bytes, config.cache.ttl_s)


def _bucket_store(config: GatewayConfig, redis: Dependency) -> BucketStore:
    if config.limits.backend == "redis":
        store = RedisBucketStore(config.redis_url_for(config.limits))
        return GuardedBuckets(store, MemoryBucketStore(), config.limits.on_redis_error, redis)
    return MemoryBucketStore()
