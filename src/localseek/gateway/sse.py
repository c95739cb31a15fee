"""Server-sent events as OpenAI streams them: `data: {json}` events ending with `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = "[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return (
        b"data: "
        + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        + b"\n\n"
    )


async def iter_data(response: httpx.Response) -> AsyncIterator[str]:
    """The data payload of each event (multi-line data joined with newlines)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
    if lines:
        yield "\n".join(lines)


class EventStreamResponse(StreamingResponse):
    """A streamed answer that runs `on_close` however it ends: finished, client gone, or never
    started (the ASGI server calls every response it is given; a generator's `finally` alone
    would not run for a body that was never iterated)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ):
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._on_close is not None:
                await self._on_close()
