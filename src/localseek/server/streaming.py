"""Server-Sent Events and client-disconnect handling shared by the completion routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from localseek.api.event_stream import EventStreamResponse

__all__ = ["DONE", "ClientDisconnected", "EventStreamResponse", "sse", "unless_disconnected"]

T = TypeVar("T")

DONE = "data: [DONE]\n\n"


def sse(payload: BaseModel | dict) -> str:
    """One SSE event; choices keep explicit nulls for finish_reason/logprobs, as OpenAI sends."""
    if isinstance(payload, BaseModel):
        data: dict[str, Any] = payload.model_dump(exclude_none=True)
        for choice in data.get("choices", ()):
            choice.setdefault("finish_reason", None)
            choice.setdefault("logprobs", None)
    else:
        data = payload
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ClientDisconnected(Exception):
    """The client went away before the response was ready."""


async def _until_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and raising ClientDisconnected) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise ClientDisconnected()
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
