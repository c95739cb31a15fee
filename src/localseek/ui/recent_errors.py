"""An ASGI middleware keeping the last few error answers (status, route, message) for /ui."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MAX_BODY = 4096  # error bodies are small JSON; anything past this is not worth keeping


@dataclass(frozen=True)
class RecentError:
    at: float  # unix seconds
    method: str
    path: str
    status: int
    message: str


class RecentErrors:
    """A bounded log of the app's answers with status >= 400 (never request bodies)."""

    def __init__(self, size: int = 20):
        self._items: deque[RecentError] = deque(maxlen=size)

    def add(self, item: RecentError) -> None:
        self._items.append(item)

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in reversed(self._items)]


class RecentErrorsMiddleware:
    """Records error answers on the API routes into a RecentErrors (the /ui page's own are not)."""

    def __init__(self, app: ASGIApp, errors: RecentErrors):
        self.app = app
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/ui"):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                if len(body) < _MAX_BODY:
                    body.extend(message.get("body", b"")[: _MAX_BODY - len(body)])
                if not message.get("more_body", False):
                    self._record(scope, status, bytes(body))
            await send(message)

        await self.app(scope, receive, capture)

    def _record(self, scope: Scope, status: int, body: bytes) -> None:
        message = body.decode("utf-8", "replace")
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        path = scope["path"]
        self.errors.add(RecentError(time.time(), scope["method"], path, status, message[:300]))
