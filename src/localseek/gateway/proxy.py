"""Forwarding to upstreams: retries on another upstream for any failure before the first byte."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from localseek.api.errors import error_body, error_type_for_status
from localseek.errors import OverloadedError, UpstreamError
from localseek.gateway.config import DispatchConfig
from localseek.gateway.dispatch import Dispatcher, NoUpstreamLeft
from localseek.gateway.lease import Lease
from localseek.gateway.request import ROUTES, GatewayRequest, encode_body
from localseek.gateway.server_kinds import SERVER_KINDS
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
    """An upstream that answered 200; owns its lease and response until `aclose()`."""

    lease: Lease
    response: httpx.Response
    body: dict[str, Any] | None = None  # the parsed JSON for non-streamed requests

    @property
    def upstream(self) -> Upstream:
        return self.lease.upstream

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            self.lease.close()


@dataclass
class Attempts:
    """What one client request has tried so far, across retries and continuations."""

    exclude: set[str] = field(default_factory=set)
    count: int = 0
    errors: list[str] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)  # from busy answers (429, busy 503s)
    rate_limited_only: bool = True


class Forwarder:
    """Sends a request to an upstream chosen by the dispatcher, retrying elsewhere on failure."""

    def __init__(self, dispatcher: Dispatcher, config: DispatchConfig, metrics: GatewayMetrics):
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
        """The first upstream to answer 200 (and, unless streaming, deliver a whole JSON body).

        A streamed Opened still holds its lease: the caller must `aclose()` it. A non-streamed
        one has already given its slot back.
        """
        loop = asyncio.get_running_loop()
        while tried.count < self._config.max_attempts:
            remaining = req.deadline - loop.time()
            if remaining <= 0:
                break
            try:
                lease = await self.dispatcher.acquire(
                    req, frozenset(tried.exclude), needs_continuation=needs_continuation
                )
            except NoUpstreamLeft:
                break
            if tried.count:
                self._metrics.retries.inc()
            tried.count += 1
            opened = await self._try(lease, req, build, remaining, stream, tried)
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
        lease: Lease,
        req: GatewayRequest,
        build: BodyBuilder,
        remaining: float,
        stream: bool,
        tried: Attempts,
    ) -> Opened | None:
        """One attempt, entirely inside the lease: whatever is raised, the slot comes back."""
        async with contextlib.AsyncExitStack() as owned:
            await owned.enter_async_context(lease)
            upstream = lease.upstream
            content = encode_body(build(upstream))  # a client error here is never the upstream's
            timeout = httpx.Timeout(
                remaining, connect=min(self._config.connect_timeout_s, remaining)
            )
            request = upstream.client.build_request(
                "POST",
                upstream.url(ROUTES[req.route]),
                content=content,
                headers={"content-type": "application/json"},
                timeout=timeout,
            )
            try:
                response = await upstream.client.send(request, stream=True)
                owned.push_async_callback(response.aclose)  # closed before the lease (LIFO)
                if response.status_code != 200:
                    await response.aread()
                    self._refused(lease, response, tried)
                    return None
                opened = Opened(lease, response)
                if not stream:
                    opened.body = json.loads(await response.aread())
                    lease.ok()
                    return opened
            except (httpx.HTTPError, ValueError) as exc:
                self.failed(lease, error_kind(exc), tried, f"{upstream.name}: {type(exc).__name__}")
                return None
            owned.pop_all()  # the stream's reader owns the lease and the response from here
            return opened

    def _refused(self, lease: Lease, response: httpx.Response, tried: Attempts) -> None:
        """A non-200 answer: busy (429, or the server kind's busy 503) and 5xx count against the
        upstream; other 4xx are raised."""
        status = response.status_code
        busy = SERVER_KINDS[lease.upstream.config.server].is_busy(response)
        if busy or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            kind = "status_429" if busy else "status_5xx"
            if busy:  # the client hears Retry-After (1 s if none) when every replica is busy
                tried.retry_after.append(retry_after if retry_after is not None else 1.0)
            self.failed(lease, kind, tried, f"{lease.upstream.name}: HTTP {status}", retry_after)
            return
        # 4xx (other than 429): the request itself is wrong, every upstream would say the same.
        lease.rejected()
        raise UpstreamRejected(status, openai_error_payload(status, response))

    def failed(
        self,
        lease: Lease,
        kind: str,
        tried: Attempts,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        """Count a failure against the lease's upstream and never retry that one."""
        lease.failed(kind, retry_after)
        if kind != "status_429":
            tried.rate_limited_only = False
        tried.exclude.add(lease.upstream.name)
        tried.errors.append(message)


def openai_error_payload(status: int, response: httpx.Response) -> dict[str, Any]:
    """An upstream's error body in OpenAI's shape, whatever shape it came in."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return {"error": {"type": "invalid_request_error", "param": None, "code": None, **error}}
    detail = payload.get("detail") if isinstance(payload, dict) else None
    message = detail if isinstance(detail, str) else response.text[:500]
    return error_body(f"upstream answered HTTP {status}: {message}", error_type_for_status(status))


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
