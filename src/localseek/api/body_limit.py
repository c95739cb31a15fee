"""BodyLimitMiddleware: 413 for request bodies over the limit, before any route parses them.

Pure ASGI (not BaseHTTPMiddleware) so the routes' `receive` still reports client disconnects.
The body is read here, up to the limit, then replayed to the app: a chunked upload without a
Content-Length is bounded as well. Both apps (server and gateway) install it.

An over-limit body is read on and discarded (never stored) up to `_DRAIN_FACTOR` times the
limit before the 413 is sent: a client that writes its whole body before reading the answer (httpx,
the gateway forwarding to a replica) then receives the 413, instead of a connection reset that
would look like a dead replica. Beyond that the connection is closed.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from localseek.api.request_body import replay

_DRAIN_FACTOR = 8


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > _DRAIN_FACTOR * self.max_body_bytes:
            await self._reject(send, declared)  # too big to read on: answer and close
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left while uploading; nothing to answer
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > self.max_body_bytes or (declared or 0) > self.max_body_bytes:
                chunks.clear()
                if more and size <= _DRAIN_FACTOR * self.max_body_bytes:
                    continue  # read on, keep nothing
                await self._reject(send, max(size, declared or 0))
                return
            chunks.append(chunk)
        await self.app(scope, replay(b"".join(chunks), receive), send)

    async def _reject(self, send: Send, size: int) -> None:
        payload = json.dumps(
            {
                "error": {
                    "message": f"request body of {size} bytes exceeds the limit of "
                    f"{self.max_body_bytes} bytes",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "payload_too_large",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
