"""The gateway's request pipeline: tenant, policy, limits, cache, dispatch, accounting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localseek.errors import NotFoundError, OverloadedError, RateLimitError, UpstreamError
from localseek.gateway.affinity import affinity_key
from localseek.gateway.cache import MemoryCacheBackend, ResponseCache
from localseek.gateway.config import GatewayConfig, TenantConfig, UpstreamConfig
from localseek.gateway.dispatch import Dispatcher
from localseek.gateway.limits import RateLimiter
from localseek.gateway.policy import DataPolicy
from localseek.gateway.proxy import Attempts, Forwarder
from localseek.gateway.relay import StreamRelay, upstream_body
from localseek.gateway.request import GatewayRequest, estimate_tokens, parse_body, usage_tokens
from localseek.gateway.sse import DONE_EVENT, event
from localseek.gateway.stream import replay_chunks
from localseek.gateway.tenants import TenantDirectory
from localseek.gateway.upstream import Upstream
from localseek.gateway.usage_ledger import Ledger, NullLedger, UsageEvent
from localseek.ops.metrics.gateway import GatewayMetrics


@dataclass
class Reply:
    """A complete JSON answer, or a stream of SSE bytes."""

    status: int = 200
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    close: Callable[[], Awaitable[None]] | None = None  # run once the stream's response ends


class GatewayService:
    """Handles one chat or completions request from raw bytes to a Reply."""

    def __init__(
        self,
        config: GatewayConfig,
        upstreams: Sequence[Upstream],
        dispatcher: Dispatcher,
        forwarder: Forwarder,
        cache: ResponseCache,
        limiter: RateLimiter,
        tenants: TenantDirectory,
        metrics: GatewayMetrics,
        ledger: Ledger | None = None,
    ):
        self._config = config
        self._upstreams = upstreams
        self.dispatcher = dispatcher
        self._forwarder = forwarder
        self._cache = cache
        self._limiter = limiter
        self._tenants = tenants
        self._policy = DataPolicy(config.policy)
        self._metrics = metrics
        self._ledger = ledger or NullLedger()

    async def handle(self, route: str, raw: bytes, headers: dict[str, str]) -> Reply:
        tenant = self._tenants.resolve(headers.get("authorization"))
        req = self._build(route, parse_body(route, raw), tenant, headers.get("x-data-class"))
        try:
            return await self._serve(req)
        except (OverloadedError, UpstreamError) as exc:
            self._refused(req, exc)
            raise

    async def _serve(self, req: GatewayRequest) -> Reply:
        tenant = req.tenant
        await self._limiter.admit(tenant, req.estimated_tokens)
        if req.cache_key is not None:
            cached = await self._cache.get(req.cache_key)
            if cached is not None:
                self._metrics.cache_hits.inc()
                await self._limiter.reconcile(tenant, req.estimated_tokens, 0)
                self._record(req, "cache", cached)
                return self._replay(req, cached)
            self._metrics.cache_misses.inc()
        if req.stream:
            relay = StreamRelay(self._forwarder, req, self._metrics)
            await relay.start()
            return Reply(stream=self._stream(req, relay), close=relay.aclose)
        opened = await self._forwarder.open(
            req, lambda u: upstream_body(req, u), Attempts(), stream=False
        )
        body = opened.body if isinstance(opened.body, dict) else {}
        if opened.upstream.config.model_map.get(req.model):
            body["model"] = req.model
        await self._account(req, opened.upstream, body)
        if req.cache_key is not None and body.get("choices"):
            await self._store(req.cache_key, body)
        return Reply(body=body)

    def _build(
        self, route: str, body: dict[str, Any], tenant: TenantConfig, data_class: str | None
    ) -> GatewayRequest:
        if not self.dispatcher.balancer.serves(body["model"]):
            raise NotFoundError(
                f"model {body['model']!r} is not served by any upstream; see GET /v1/models",
                param="model",
            )
        verdict = self._policy.classify(
            body, tenant_local_only=tenant.local_only, data_class=data_class
        )
        if verdict.local_only:
            self._metrics.local_only.labels(verdict.reason).inc()
        loop = asyncio.get_running_loop()
        return GatewayRequest(
            route=route,
            body=body,
            tenant=tenant,
            classification=verdict,
            estimated_tokens=estimate_tokens(body, self._config.limits.default_max_tokens),
            deadline=loop.time() + self._config.admission.request_timeout_s,
            affinity_key=affinity_key(body, self._config.balancer),
            cache_key=self._cache.key_for(route, body, tenant.name),
        )

    def _replay(self, req: GatewayRequest, cached: dict[str, Any]) -> Reply:
        if not req.stream:
            return Reply(body=cached, headers={"x-localseek-cache": "hit"})
        include_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))
        chunks = replay_chunks(req.route, cached, include_usage)

        async def replay() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield event(chunk)
            yield DONE_EVENT

        return Reply(stream=replay(), headers={"x-localseek-cache": "hit"})

    async def _stream(self, req: GatewayRequest, relay: StreamRelay) -> AsyncIterator[bytes]:
        async for data in relay.events():
            yield data
        if not relay.completed or relay.last_upstream is None:
            return
        response = relay.assembler.response()
        await self._account(req, relay.last_upstream, response)
        cacheable = relay.tried.count == 1 and not relay.assembler.has_tool_calls
        if req.cache_key is not None and cacheable:
            await self._store(req.cache_key, response)

    async def _store(self, key: str, response: dict[str, Any]) -> None:
        written = await self._cache.put(key, response)
        self._metrics.cache_stored_bytes.inc(written)
        if isinstance(self._cache.backend, MemoryCacheBackend):
            self._metrics.cache_bytes.set(self._cache.backend.bytes_used)

    async def _account(self, req: GatewayRequest, upstream: Upstream, body: dict[str, Any]) -> None:
        """Tokens per tenant, cloud spend, the cloud price of local tokens; limit reconciliation."""
        usage = usage_tokens(body)
        if usage is None:
            self._record(req, upstream.config.kind, body, 0.0)
            return
        prompt, completion = usage
        tenant = req.tenant.name
        kind = upstream.config.kind
        self._metrics.tokens.labels(tenant, kind, "input").inc(prompt)
        self._metrics.tokens.labels(tenant, kind, "output").inc(completion)
        usd = self._price(upstream.config if upstream.is_cloud else None, req.model, usage)
        if usd:
            (self._metrics.cloud_cost if upstream.is_cloud else self._metrics.saved).labels(
                tenant
            ).inc(usd)
        self._record(req, kind, body, usd)
        await self._limiter.reconcile(req.tenant, req.estimated_tokens, prompt + completion)

    def _price(
        self, cloud: UpstreamConfig | None, model: str, usage: tuple[int, int] | None
    ) -> float:
        """USD for `usage` at the cloud's price (None: the reference cloud price for `model`)."""
        price = cloud or self._reference_price(model)
        if price is None or usage is None:
            return 0.0
        prompt, completion = usage
        return (
            prompt * price.price_input_per_mtok + completion * price.price_output_per_mtok
        ) / 1e6

    def _record(
        self, req: GatewayRequest, outcome: str, body: dict[str, Any], usd: float | None = None
    ) -> None:
        """One ledger row: a cached answer saves what the cloud would have charged for it."""
        usage = usage_tokens(body)
        prompt, completion = usage or (0, 0)
        if usd is None:
            usd = self._price(None, req.model, usage)
        cost = usd if outcome == "cloud" else 0.0
        self._ledger.record(
            UsageEvent(req.tenant.name, req.model, outcome, prompt, completion, cost, usd - cost)
        )

    def _refused(self, req: GatewayRequest, exc: OverloadedError | UpstreamError) -> None:
        """A request answered 429 or 5xx: to the ledger, and alarming when it had to stay local."""
        self._ledger.record(UsageEvent(req.tenant.name, req.model, "refused"))
        if isinstance(exc, RateLimitError):  # the tenant's own limit, not a missing replica
            self._metrics.shed.labels(req.tenant.name, "rate_limit").inc()
        elif req.classification.local_only:
            reason = "overloaded" if isinstance(exc, OverloadedError) else "unavailable"
            self._metrics.local_only_refused.labels(reason).inc()

    def _reference_price(self, model: str) -> UpstreamConfig | None:
        """The cloud upstream whose price a local token saved: one serving the model, else any."""
        clouds = [u.config for u in self._upstreams if u.is_cloud]
        serving = [c for c in clouds if c.serves(model)]
        return (serving or clouds or [None])[0]
