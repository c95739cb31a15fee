"""GatewayFront: the gateway's outer ASGI app — admin API, model-version routing, hot reload.

Requests for a versioned public model get their `model` rewritten to the chosen version's
model id before the gateway app (create_app) balances them, and are counted per version.
The gateway app itself is a *generation*: a reload (POST /admin/reload or SIGHUP) validates
and starts a new one from the config file, sends new requests to it, and retires the old one
only when its in-flight requests (streams included) are done, so none is dropped. A config
that does not parse or build is refused and the running generation keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import JSONResponse, Response

from localseek.api.body_limit import BodyLimitMiddleware
from localseek.api.request_body import read_body, replay
from localseek.errors import ConfigError, InvalidRequestError, LocalseekError
from localseek.gateway.config import GatewayConfig, load_gateway_config
from localseek.gateway.tenants import TenantDirectory
from localseek.gateway.versions import Route, VersionRouter
from localseek.ops.metrics.versions import VersionMetrics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AppBuilder = Callable[[GatewayConfig], FastAPI]

_COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
_RETIRE_POLL_S = 0.05
VERSION_HEADER = b"x-localseek-model-version"


class Generation:
    """One gateway app built from one config, and how many requests it is still serving."""

    def __init__(self, config: GatewayConfig, build: AppBuilder):
        self.config = config
        self.tenants = TenantDirectory(config.tenants)
        self.admin_keys = _admin_keys(config)
        self.app = build(config)
        self.in_flight = 0
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))

    async def retire(self, timeout_s: float) -> None:
        """Stop once every request it admitted has finished (or after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(_RETIRE_POLL_S)
        if self.in_flight:
            log.warning("retiring the old config with %d request(s) in flight", self.in_flight)
        await self._stack.aclose()


def _admin_keys(config: GatewayConfig) -> tuple[str, ...]:
    keys = list(config.admin.api_keys)
    for env in config.admin.api_key_envs:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"admin: environment variable {env} (api_key_envs) is not set")
        keys.append(value)
    return tuple(keys)


class GatewayFront:
    """ASGI app serving /admin/* itself and everything else through the current generation."""

    def __init__(self, config: GatewayConfig, build: AppBuilder, config_path: Path | None = None):
        from localseek.gateway.admin import build_admin_app

        self._build = build
        self._path = config_path
        self.current = Generation(config, build)
        self.router = VersionRouter(config.models)
        self.registry = CollectorRegistry()
        self.metrics = VersionMetrics(self.registry)
        self.admin = build_admin_app(self)
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/admin" or path.startswith("/admin/")):
            await self.admin(scope, receive, send)
            return
        gen = self.current
        gen.in_flight += 1
        try:
            method = scope.get("method")
            if method == "POST" and path in _COMPLETION_PATHS and self.router.public_names():
                # The body is read here to pick the version: bounded while reading, as the
                # generation's app bounds it (413 before anything is parsed or forwarded).
                versioned = functools.partial(self._versioned, gen)
                limit = gen.config.max_body_bytes
                await BodyLimitMiddleware(versioned, max_body_bytes=limit)(scope, receive, send)
            elif method == "GET" and path == "/v1/models":
                await self._models(gen, scope, receive, send)
            elif method == "GET" and path == "/metrics":
                await self._metrics(gen, scope, receive, send)
            else:
                await gen.app(scope, receive, send)
        finally:
            gen.in_flight -= 1

    # ---- reload -------------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Swap in a generation built from the config file; refuse (400) a bad one."""
        if self._path is None:
            raise InvalidRequestError("this gateway was not started from a config file")
        async with self._lock:
            try:
                config = load_gateway_config(self._path)
                fresh = Generation(config, self._build)
                await fresh.start()
            except (LocalseekError, OSError, ValueError) as exc:
                self.metrics.reloads.labels("refused").inc()
                reason = exc.message if isinstance(exc, LocalseekError) else str(exc)
                raise InvalidRequestError(
                    f"new config refused, the running one keeps serving: {reason}",
                    code="config_invalid",
                ) from exc
            old, self.current = self.current, fresh
            self.router = VersionRouter(config.models)
            task = asyncio.create_task(old.retire(old.config.admission.request_timeout_s))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            self.metrics.reloads.labels("applied").inc()
            log.info("config reloaded from %s", self._path)
            return {
                "status": "reloaded",
                "upstreams": [u.name for u in config.upstreams],
                "models": self.router.snapshot(),
            }

    def _on_sighup(self) -> None:
        async def run() -> None:
            try:
                await self.reload()
            except LocalseekError as exc:
                log.error("SIGHUP reload: %s", exc.message)

        task = asyncio.ensure_future(run())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.current.start()
        except (LocalseekError, OSError) as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        hup = _listen_for_sighup(self._on_sighup) if self._path is not None else False
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if hup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.current.retire(0)
        await send({"type": "lifespan.shutdown.complete"})

    # ---- routes -------------------------------------------------------------------------------

    async def _versioned(self, gen: Generation, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return  # the client left while sending; nothing to answer
        payload, route = self._route(gen, scope, body)
        if route is None:
            await gen.app(scope, replay(body, receive), send)
            return
        payload["model"] = route.model
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        status = 500
        started = time.monotonic()

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (VERSION_HEADER, route.version.encode()),
                    ],
                }
            await send(message)

        try:
            await gen.app(scope, replay(body, receive), tagged)
        finally:
            self.metrics.requests.labels(route.public, route.version, str(status)).inc()
            self.metrics.latency.labels(route.public, route.version).observe(
                time.monotonic() - started
            )

    def _route(
        self, gen: Generation, scope: Scope, body: bytes
    ) -> tuple[dict[str, Any], Route | None]:
        """The parsed body and its version; (_, None) leaves the request as it came."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return {}, None  # the gateway app answers with the precise 400
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
            return {}, None
        public = payload["model"]
        if not self.router.serves(public):
            return payload, None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        return payload, self.router.route(public, self._sticky_key(gen, public, payload, headers))

    def _sticky_key(
        self, gen: Generation, public: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> str | None:
        mode = self.router.sticky(public)
        if mode == "session":
            key = headers.get("x-session-id") or payload.get("user")
            return key if isinstance(key, str) and key else None
        if mode == "tenant":
            try:
                return gen.tenants.resolve(headers.get("authorization")).name
            except LocalseekError:
                return None  # the gateway app refuses the key itself
        return None

    async def _models(self, gen: Generation, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await _buffered(gen.app, scope, receive)
        listing = json.loads(body) if status == 200 else {"object": "list", "data": []}
        known = {m.get("id") for m in listing.get("data", [])}
        public = [
            {"id": name, "object": "model", "created": 0, "owned_by": "localseek"}
            for name in self.router.public_names()
            if name not in known
        ]
        listing["data"] = public + listing.get("data", [])
        await JSONResponse(listing)(scope, receive, send)

    async def _metrics(self, gen: Generation, scope: Scope, receive: Receive, send: Send) -> None:
        _, body = await _buffered(gen.app, scope, receive)
        for public, model in self.router.snapshot().items():
            for version in model["versions"]:
                self.metrics.weight.labels(public, version["name"]).set(version["weight"])
        text = body + generate_latest(self.registry)
        await Response(text, media_type=CONTENT_TYPE_LATEST)(scope, receive, send)


def _listen_for_sighup(handler: Callable[[], None]) -> bool:
    """SIGHUP reloads; only possible in the main thread (tests run gateways in threads)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


async def _buffered(app: FastAPI, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Run `app` for a small response and return (status, body) instead of sending them."""
    status = 500
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return status, b"".join(chunks)
