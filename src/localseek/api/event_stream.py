"""EventStreamResponse: an SSE response that always runs its cleanup, whoever ends it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse that always closes its iterator and runs `on_close`, exactly once.

    Starlette cancels the stream when the client disconnects; an async generator cancelled
    before its first step, or while suspended at a `yield`, never runs its `finally`. Engine
    requests, admission slots and upstream leases must be released in every case, so it is done
    here: the ASGI server calls every response it is given, even one whose body never starts.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[str] | AsyncIterator[bytes],
        on_close: Callable[[], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(content, headers={**_HEADERS, **(headers or {})})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self._on_close is not None:
                    await self._on_close()
