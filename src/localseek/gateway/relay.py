"""Relaying a streamed answer; if its upstream dies mid-stream, continuing it on another one."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from localseek.errors import LocalseekError
from localseek.gateway.proxy import (
    Attempts,
    BodyBuilder,
    Forwarder,
    Opened,
    UpstreamRejected,
    error_kind,
)
from localseek.gateway.request import GatewayRequest
from localseek.gateway.sse import DONE, DONE_EVENT, event, iter_data
from localseek.gateway.stream import SentTokens, StreamAssembler
from localseek.gateway.upstream import Upstream
from localseek.ops.metrics.gateway import GatewayMetrics


def upstream_body(req: GatewayRequest, upstream: Upstream) -> dict[str, Any]:
    """The client's body as this upstream should receive it (its model id; usage in streams)."""
    body = copy.deepcopy(req.body)
    body["model"] = upstream.config.upstream_model(req.model)
    if req.stream:
        # Usage lets the gateway reconcile token limits and count cost; usage in every chunk
        # tells it how many tokens reached the client if the stream is cut. The client only
        # sees what it asked for.
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        # Not even the client's own request for it reaches an upstream that may reject it.
        options.pop("continuous_usage_stats", None)
        if upstream.config.asks_continuous_usage:
            options["continuous_usage_stats"] = True
        body["stream_options"] = options
    return body


class StreamRelay:
    """One client stream over one or more upstream streams.

    The client sees a single answer: chunk ids, `created` and `model` keep their first values,
    the role is announced once. When an upstream fails after bytes reached the client, another
    upstream is asked to continue from the prompt plus the text already sent; when that is not
    possible the stream ends with an explicit error event, never a silent cut.
    """

    def __init__(self, forwarder: Forwarder, req: GatewayRequest, metrics: GatewayMetrics):
        self._forwarder = forwarder
        self._req = req
        self._metrics = metrics
        options = req.body.get("stream_options") or {}
        self._include_usage = bool(options.get("include_usage"))
        self._usage_every_chunk = self._include_usage and bool(
            options.get("continuous_usage_stats")
        )
        self.assembler = StreamAssembler(req.route)
        self.sent = SentTokens()
        self.tried = Attempts()
        self.completed = False
        self.last_upstream: Upstream | None = None
        self._opened: Opened | None = None
        self._role_sent: set[int] = set()
        self._fixed: dict[str, Any] = {}

    async def start(self) -> None:
        """Open the first upstream stream; failures here are retried, then raised to the client."""
        self._opened = await self._forwarder.open(
            self._req, lambda u: upstream_body(self._req, u), self.tried, stream=True
        )

    async def aclose(self) -> None:
        """Give back the stream held, if any (the client left, or the body was never sent)."""
        opened, self._opened = self._opened, None
        if opened is not None:
            await opened.aclose()

    async def events(self) -> AsyncIterator[bytes]:
        try:
            while self._opened is not None:
                opened = self._opened
                cut = False
                try:
                    async for data in self._relay(opened):
                        yield data
                except (httpx.HTTPError, ValueError, _InStreamError) as exc:
                    cut, kind = True, _kind(exc)
                self.last_upstream = opened.upstream
                if not cut:
                    opened.lease.ok()
                    await self.aclose()
                    self.completed = True
                    yield DONE_EVENT
                    return
                self._forwarder.failed(
                    opened.lease, kind, self.tried, f"{opened.upstream.name}: cut mid-stream"
                )
                await self.aclose()
                self.sent.cut(partial=any(self.assembler.text.values()))
                self.assembler.usage = None  # the cut stream's usage so far is not the answer's
                async for data in self._continue():
                    yield data
        finally:
            await self.aclose()  # the client went away mid-stream: no verdict on the upstream

    async def _relay(self, opened: Opened) -> AsyncIterator[bytes]:
        done = False
        async for data in iter_data(opened.response):
            if data.strip() == DONE:
                done = True
                break
            chunk = json.loads(data)
            if not isinstance(chunk, dict):
                raise ValueError("stream chunk is not a JSON object")
            if "error" in chunk and not chunk.get("choices"):
                raise _InStreamError(str(chunk["error"])[:200])
            usage = chunk.get("usage")
            if isinstance(usage, dict):  # the client and the accounting see the whole answer's
                chunk["usage"] = self.sent.answer_usage(usage)
            out = self._rewrite(chunk, opened.upstream)  # fixes id/model in place
            chunks = self.assembler.chunks
            self.assembler.add(chunk)
            self.sent.observe(usage, content=self.assembler.chunks > chunks)
            if out is not None:
                yield event(out)
        if not (done or self.assembler.finished):
            raise _InStreamError("upstream stream ended without a finish")

    def _rewrite(self, chunk: dict[str, Any], upstream: Upstream) -> dict[str, Any] | None:
        if self._req.model in upstream.config.model_map:
            chunk["model"] = self._req.model  # the id the client asked for, not the upstream's
        for name in ("id", "created", "model"):
            self._fixed.setdefault(name, chunk.get(name))
            chunk[name] = self._fixed[name]
        if not chunk.get("choices") and "usage" in chunk and not self._include_usage:
            return None
        # Usage on a chunk with choices is the usage so far where the gateway asked for it: the
        # client sees it only if it asked too (include_usage alone: one final usage chunk).
        keep = self._include_usage and (
            self._usage_every_chunk
            or not chunk.get("choices")
            or not upstream.config.asks_continuous_usage
        )
        if chunk.get("usage") is not None and not keep:
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            index = choice.get("index", 0)
            if isinstance(delta, dict) and "role" in delta:
                if index in self._role_sent:
                    del delta["role"]
                self._role_sent.add(index)
        return chunk

    async def _continue(self) -> AsyncIterator[bytes]:
        """Open a continuation on another upstream, or end the stream with an error event."""
        reason = self._why_not_continuable()
        if reason is None and self._budget_spent():
            self._metrics.continuations.labels("finished").inc()
            for data in self._finish_at_budget():
                yield data
            return
        if reason is None:
            partial = "".join(self.assembler.text.values())
            try:
                self._opened = await self._forwarder.open(
                    self._req,
                    self._continuation_builder(partial),
                    self.tried,
                    stream=True,
                    needs_continuation=bool(partial),
                )
                self._metrics.continuations.labels("continued").inc()
                return
            except (LocalseekError, UpstreamRejected) as exc:
                reason = f"no upstream could continue it ({_message(exc)})"
        self._metrics.continuations.labels("failed").inc()
        yield event(
            {
                "error": {
                    "message": f"the upstream failed mid-stream and {reason}; the answer is incomplete",
                    "type": "upstream_error",
                    "param": None,
                    "code": "stream_interrupted",
                }
            }
        )
        yield DONE_EVENT

    def _why_not_continuable(self) -> str | None:
        body = self._req.body
        if (body.get("n") or 1) > 1 or len(self.assembler.text) > 1:
            return "it asked for several choices (n > 1)"
        if self.assembler.has_tool_calls or any(self.assembler.reasoning.values()):
            return "tool calls or reasoning cannot be continued"
        if self._req.route == "completions" and not _text_prompt(body.get("prompt")):
            return "its prompt is not text"
        return None

    def _budget_spent(self) -> bool:
        """The cut stream had sent max_tokens tokens: only the finish was missing."""
        limits = [self._req.body.get(n) for n in ("max_tokens", "max_completion_tokens")]
        return any(isinstance(n, int) and n <= self.sent.before for n in limits)

    def _finish_at_budget(self) -> list[bytes]:
        """End the answer as the upstream would have: finish_reason length, usage, [DONE]."""
        self.assembler.usage = self.sent.finished_usage()
        chat = self._req.route == "chat"
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        choice.update({"delta": {}} if chat else {"text": ""})
        base = {**self._fixed, "object": "chat.completion.chunk" if chat else "text_completion"}
        chunks = [{**base, "choices": [choice]}]
        if self._include_usage and self.assembler.usage is not None:
            chunks.append({**base, "choices": [], "usage": self.assembler.usage})
        self.assembler.add(chunks[0])
        self.completed = True
        return [*(event(c) for c in chunks), DONE_EVENT]

    def _continuation_builder(self, partial: str) -> BodyBuilder:
        req = self._req
        sent = self.sent.before  # tokens, as the upstream counted them (or chunks, if not)

        def build(upstream: Upstream) -> dict[str, Any]:
            body = upstream_body(req, upstream)
            if not partial:
                return body  # nothing reached the client yet but the role: simply start over
            for name in ("max_tokens", "max_completion_tokens"):
                if isinstance(body.get(name), int):
                    body[name] = max(1, body[name] - sent)
            if req.route == "completions":
                body["prompt"] = _text_prompt(body["prompt"]) + partial
                return body
            final = {"role": "assistant", "content": partial}
            if upstream.config.continuation == "prefix":
                final["prefix"] = True
            else:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            body["messages"] = [*body["messages"], final]
            return body

        return build


class _InStreamError(Exception):
    """The upstream's stream ended badly (an error event, or no finish and no [DONE])."""


def _kind(exc: BaseException) -> str:
    return "stream_cut" if isinstance(exc, _InStreamError) else error_kind(exc)


def _text_prompt(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    return None


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, LocalseekError) else str(exc)
