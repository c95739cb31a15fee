"""Forwarding to upstreams: retries on another upstream for any failure before the first byte."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from localseek.errors import OverloadedError, UpstreamError
from localseek.gateway.config import AdmissionConfig
from localseek.gateway.dispatch import Dispatcher, NoUpstreamLeft
from localseek.gateway.request import ROUTES, GatewayRequest
from localseek.gateway.upstream import Upstream
from localseek.ops.metrics.gateway import GatewayMetrics

BodyBuilder = Callable[[Upstream], dict[str, Any]]


class UpstreamRejected(Exception):
    """The upstream answered 4xx: the client's request is at fault; passed through, not retried."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"upstream rejected the request with {status}")
        self.status = status
        self.body = body


@dataclass
class Opened:
    """An upstream that answered 200, holding a slot until released."""

    upstream: Upstream
    response: httpx.Response
    started: float
    body: dict[str, Any] | None = None  # the parsed JSON for non-streamed requests


@dataclass
class Attempts:
    """What one client request has tried so far, across retries and continuations."""

    exclude: set[str] = field(default_factory=set)
    count: int = 0
    errors: list[str] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)  # from upstream 429s
    rate_limited_only: bool = True


class Forwarder:
    """Sends a request to an upstream chosen by the dispatcher, retrying elsewhere on failure."""

    def __init__(self, dispatcher: Dispatcher, config: AdmissionConfig, metrics: GatewayMetrics):
        self.dispatcher = dispatcher
        self._config = config
        self._metrics = metrics

    async def open(
        self,
        req: GatewayRequest,
        build: BodyBuilder,
        tried: Attempts,
        *,
        stream: bool,
        needs_continuation: bool = False,
    ) -> Opened:
        """The first upstream to answer 200 (and, unless streaming, deliver a whole JSON body)."""
        loop = asyncio.get_running_loop()
        while tried.count < self._config.max_attempts:
            remaining = req.deadline - loop.time()
            if remaining <= 0:
                break
            try:
                upstream = await self.dispatcher.acquire(
                    req, frozenset(tried.exclude), needs_continuation=needs_continuation
                )
            except NoUpstreamLeft:
                break
            if tried.count:
                self._metrics.retries.inc()
            tried.count += 1
            opened = await self._try(upstream, req, build(upstream), remaining, stream, tried)
            if opened is not None:
                return opened
        if tried.retry_after and tried.rate_limited_only:
            raise OverloadedError(
                "every eligible upstream is rate limiting; retry later",
                retry_after=min(tried.retry_after),
            )
        detail = "; ".join(tried.errors[-4:]) or "no eligible upstream"
        raise UpstreamError(f"every eligible upstream failed for model {req.model!r}: {detail}")

    async def _try(
        self,
        upstream: Upstream,
        req: GatewayRequest,
        body: dict[str, Any],
        remaining: float,
        stream: bool,
        tried: Attempts,
    ) -> Opened | None:
        timeout = httpx.Timeout(remaining, connect=min(self._config.connect_timeout_s, remaining))
        started = time.monotonic()
        request = upstream.client.build_request(
            "POST", upstream.url(ROUTES[req.route]), json=body, timeout=timeout
        )
        response: httpx.Response | None = None
        try:
            response = await upstream.client.send(request, stream=True)
            if response.status_code != 200:
                await response.aread()
                return self._refused(upstream, response, tried)
            opened = Opened(upstream, response, started)
            if not stream:
                opened.body = json.loads(await response.aread())
                await response.aclose()
                self.finish(opened, ok=True)
            return opened
        except (httpx.HTTPError, ValueError) as exc:
            if response is not None:
                await response.aclose()
            self.fail(upstream, error_kind(exc), tried, f"{upstream.name}: {type(exc).__name__}")
            return None
        except BaseException:  # cancelled (client gone) or a 4xx passed through
            upstream.circuit.cancel_trial()
            self.dispatcher.release(upstream)
            if response is not None:
                await response.aclose()
            raise

    def _refused(
        self, upstream: Upstream, response: httpx.Response, tried: Attempts
    ) -> Opened | None:
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            kind = "status_429" if status == 429 else "status_5xx"
            if status == 429:
                tried.retry_after.append(retry_after if retry_after is not None else 1.0)
            self.fail(upstream, kind, tried, f"{upstream.name}: HTTP {status}", retry_after)
            return None
        # 4xx (other than 429): the request itself is wrong, every upstream would say the same.
        # The caller's BaseException handler releases the slot.
        upstream.circuit.record_success()
        self._metrics.upstream_requests.labels(upstream.name, "rejected").inc()
        try:
            payload = response.json()
        except ValueError:
            payload = {
                "error": {
                    "message": response.text[:500],
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        raise UpstreamRejected(status, payload if isinstance(payload, dict) else {"error": payload})

    def fail(
        self,
        upstream: Upstream,
        kind: str,
        tried: Attempts,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        """Count a failure against the upstream, release its slot, and never retry it."""
        upstream.circuit.record_failure(retry_after if kind == "status_429" else None)
        if kind != "status_429":
            tried.rate_limited_only = False
        tried.exclude.add(upstream.name)
        tried.errors.append(message)
        self._metrics.upstream_errors.labels(upstream.name, kind).inc()
        self._metrics.upstream_requests.labels(upstream.name, "error").inc()
        self.dispatcher.release(upstream)

    def finish(self, opened: Opened, *, ok: bool) -> None:
        """Release a slot after a complete answer (ok) or a client that went away (not ok)."""
        upstream = opened.upstream
        elapsed = time.monotonic() - opened.started
        if ok:
            upstream.circuit.record_success()
            self._metrics.upstream_latency.labels(upstream.name).observe(elapsed)
            self.dispatcher.queue.record_service_time(elapsed)
        else:
            upstream.circuit.cancel_trial()
        self._metrics.upstream_requests.labels(upstream.name, "ok" if ok else "cancelled").inc()
        self.dispatcher.release(upstream)


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return "connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, ValueError):
        return "bad_response"
    return "stream_cut"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
