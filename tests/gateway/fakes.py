"""Localseek-shaped fake upstreams for the gateway tests: latency, failures, capacity, SSE.

Run in-process (make_app + a uvicorn thread) or as a process that tests kill:
`python tests/gateway/fakes.py --port P --name N [--token-delay S] [--answer-tokens N]`.
Every request is recorded; GET /_requests returns them, POST /_control changes behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from localseek.api.load import LoadReport

_WORD = re.compile(r"w(\d+) ")


@dataclass
class FakeState:
    name: str
    latency_s: float = 0.0  # before the first byte
    token_delay_s: float = 0.0  # between streamed tokens
    answer_tokens: int = 8  # the answer is "w0 w1 ... w{n-1} " (capped by max_tokens)
    fail_status: int | None = None  # answer every completion with this status
    retry_after: float | None = None
    healthy: bool = True
    capacity: int | None = None  # beyond it: 429 (like `localseek serve --max-queue`)
    die_after_chunks: int | None = None  # cut streams after this many content chunks
    # Words per content chunk, like a detokenizer that held back an incomplete character.
    tokens_per_chunk: int = 1
    in_flight: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)


def answer_words(start: int, count: int) -> list[str]:
    return [f"w{i} " for i in range(start, start + count)]


def full_answer(n: int) -> str:
    return "".join(answer_words(0, n))


def _already_sent(route: str, body: dict[str, Any]) -> int:
    """Words of the answer already present (continuation requests)."""
    if route == "chat":
        last = body["messages"][-1]
        if last.get("role") == "assistant" and (
            body.get("continue_final_message") or last.get("prefix")
        ):
            return len(_WORD.findall(last.get("content") or ""))
        return 0
    match = re.search(
        r"(?:w\d+ )+$", body.get("prompt") if isinstance(body.get("prompt"), str) else ""
    )
    return len(_WORD.findall(match.group(0))) if match else 0


def make_app(state: FakeState) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health():
        return JSONResponse(
            {"status": "ok" if state.healthy else "down"}, status_code=200 if state.healthy else 503
        )

    @app.get("/load")
    async def load():
        return LoadReport(
            model=state.name,
            running=state.in_flight,
            waiting=0,
            queued=state.in_flight,
            capacity=state.capacity or 64,
            max_queue=0,
            queued_tokens=0,
            kv_usage=0.0,
            estimated_wait_s=0.0,
            generation_tokens_per_s=0.0,
            drain_tokens_per_s=None,
        ).model_dump()

    @app.get("/_requests")
    async def requests():
        return state.requests

    @app.post("/_control")
    async def control(request: Request):
        for key, value in (await request.json()).items():
            setattr(state, key, value)
        return {"ok": True}

    async def complete(route: str, request: Request):
        body = await request.json()
        state.requests.append(
            {"route": route, "body": body, "auth": request.headers.get("authorization")}
        )
        if state.fail_status is not None:
            headers = (
                {"Retry-After": str(state.retry_after)} if state.retry_after is not None else {}
            )
            return JSONResponse(
                {"error": {"message": f"{state.name} failing", "type": "server_error"}},
                status_code=state.fail_status,
                headers=headers,
            )
        if state.capacity is not None and state.in_flight >= state.capacity:
            return JSONResponse(
                {"error": {"message": "busy", "type": "rate_limit_error"}},
                status_code=429,
                headers={"Retry-After": "1"},
            )
        state.in_flight += 1
        try:
            if state.latency_s:
                await asyncio.sleep(state.latency_s)
        except BaseException:
            state.in_flight -= 1
            raise
        start = _already_sent(route, body)
        total = min(state.answer_tokens, start + (body.get("max_tokens") or 10**6))
        words = answer_words(start, max(0, total - start))
        prompt_tokens = len(json.dumps(body.get("messages", body.get("prompt")))) // 4
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if body.get("stream"):
            return StreamingResponse(
                _stream(state, route, body, words, usage), media_type="text/event-stream"
            )
        state.in_flight -= 1
        text = "".join(words)
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if route == "chat"
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        return {
            "id": f"cmpl-{state.name}",
            "object": "chat.completion" if route == "chat" else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
            "served_by": state.name,
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await complete("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete("completions", request)

    return app


async def _stream(
    state: FakeState, route: str, body: dict[str, Any], words: list[str], usage: dict
):
    base = {
        "id": f"chunk-{state.name}",
        "created": int(time.time()),
        "model": body["model"],
        "object": "chat.completion.chunk" if route == "chat" else "text_completion",
    }

    options = body.get("stream_options") or {}
    continuous = options.get("include_usage") and options.get("continuous_usage_stats")
    sent = 0  # words streamed so far

    def piece(text: str | None, finish: str | None, role: bool = False) -> bytes:
        if route == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
        chunk: dict[str, Any] = {**base, "choices": [choice]}
        if continuous:  # vLLM's continuous_usage_stats: the usage so far in every chunk
            prompt = usage["prompt_tokens"]
            chunk["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": sent,
                "total_tokens": prompt + sent,
            }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    step = state.tokens_per_chunk
    groups = [words[i : i + step] for i in range(0, len(words), step)]
    try:
        if route == "chat":
            yield piece("", None, role=True)
        for i, group in enumerate([*groups, None]):  # None: the finish
            if state.die_after_chunks is not None and i >= state.die_after_chunks:
                raise RuntimeError(f"{state.name} dies mid-stream")  # the connection is cut
            if group is None:
                break
            if state.token_delay_s:
                await asyncio.sleep(state.token_delay_s)
            sent += len(group)
            yield piece("".join(group), None)
        yield piece(None, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        state.in_flight -= 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--answer-tokens", type=int, default=8)
    args = parser.parse_args()
    import uvicorn

    state = FakeState(
        args.name,
        latency_s=args.latency,
        token_delay_s=args.token_delay,
        answer_tokens=args.answer_tokens,
    )
    uvicorn.run(
        make_app(state), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
