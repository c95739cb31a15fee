"""Streamed chunks <-> complete responses: assembling a stream for the cache, replaying a hit."""

from __future__ import annotations

from typing import Any


class StreamAssembler:
    """Accumulates the chunks of a chat or completions stream, per choice.

    It is what lets the gateway continue an answer on another upstream (the text sent so far)
    and store a streamed answer in the cache as the response a non-streamed request would get.
    """

    def __init__(self, route: str):
        self.route = route
        self.text: dict[int, str] = {}
        self.reasoning: dict[int, str] = {}
        self.finish: dict[int, str | None] = {}
        self.chunks = 0  # content-bearing chunks, ~ tokens generated
        self.usage: dict[str, Any] | None = None
        self.has_tool_calls = False
        self.model: str | None = None
        self.ident: str | None = None
        self.created: int | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        self.ident = self.ident or chunk.get("id")
        self.created = self.created or chunk.get("created")
        self.model = self.model or chunk.get("model")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            i = int(choice.get("index", 0))
            self.text.setdefault(i, "")
            if self.route == "chat":
                delta = choice.get("delta") or {}
                piece = delta.get("content") or ""
                self.reasoning[i] = self.reasoning.get(i, "") + (
                    delta.get("reasoning_content") or ""
                )
                if delta.get("tool_calls"):
                    self.has_tool_calls = True
            else:
                piece = choice.get("text") or ""
            if piece:
                self.text[i] += piece
                self.chunks += 1
            if choice.get("finish_reason") is not None:
                self.finish[i] = choice["finish_reason"]

    @property
    def finished(self) -> bool:
        """Every choice seen so far has a finish reason."""
        return bool(self.text) and all(self.finish.get(i) for i in self.text)

    def response(self) -> dict[str, Any]:
        """The complete response a non-streamed request would have received."""
        choices = []
        for i in sorted(self.text):
            if self.route == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": self.text[i]}
                if self.reasoning.get(i):
                    message["reasoning_content"] = self.reasoning[i]
                choices.append(
                    {"index": i, "message": message, "finish_reason": self.finish.get(i)}
                )
            else:
                choices.append(
                    {"index": i, "text": self.text[i], "finish_reason": self.finish.get(i)}
                )
        out: dict[str, Any] = {
            "id": self.ident,
            "object": "chat.completion" if self.route == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def replay_chunks(
    route: str, response: dict[str, Any], include_usage: bool
) -> list[dict[str, Any]]:
    """A complete response as the chunks of a stream (one content chunk per choice)."""
    base = {
        "id": response.get("id"),
        "created": response.get("created"),
        "model": response.get("model"),
    }
    obj = "chat.completion.chunk" if route == "chat" else "text_completion"
    chunks: list[dict[str, Any]] = []
    for choice in response.get("choices") or []:
        i = choice.get("index", 0)
        if route == "chat":
            message = dict(choice.get("message") or {})
            delta = {k: v for k, v in message.items() if v is not None}
            if isinstance(delta.get("tool_calls"), list):
                delta["tool_calls"] = [
                    {"index": n, **call} for n, call in enumerate(delta["tool_calls"])
                ]
            body = {"index": i, "delta": delta, "finish_reason": None}
            end = {"index": i, "delta": {}, "finish_reason": choice.get("finish_reason")}
        else:
            body = {"index": i, "text": choice.get("text", ""), "finish_reason": None}
            end = {"index": i, "text": "", "finish_reason": choice.get("finish_reason")}
        chunks.append({**base, "object": obj, "choices": [body]})
        chunks.append({**base, "object": obj, "choices": [end]})
    if include_usage and response.get("usage") is not None:
        chunks.append({**base, "object": obj, "choices": [], "usage": response["usage"]})
    return chunks


class SentTokens:
    """Completion tokens of one answer that reached the client, across its upstream streams.

    An upstream asked for `continuous_usage_stats` reports the tokens so far in every chunk; for
    one that does not, each content chunk counts as one token (an undercount when the upstream's
    detokenizer held back an incomplete character and a chunk carries several tokens).
    """

    def __init__(self) -> None:
        self.before = 0  # tokens of the earlier, cut streams that the current one continues
        self._prompt_usage: dict[str, Any] | None = None  # a usage of the original prompt
        self._continued = False  # the current stream's prompt holds a partial answer
        self._reported = 0  # the current stream's last reported completion_tokens
        self._chunks_since = 0  # its content chunks after that report

    @property
    def total(self) -> int:
        """Tokens sent so far, this stream's included."""
        return self.before + self._reported + self._chunks_since

    def observe(self, usage: Any, content: bool) -> None:
        """One chunk of the current stream: its upstream usage (if any), whether it had text."""
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            # The usage covers this chunk's own text too.
            self._reported, self._chunks_since = usage["completion_tokens"], 0
            if not self._continued and self._prompt_usage is None:
                self._prompt_usage = usage
        elif content:
            self._chunks_since += 1

    def cut(self, partial: bool) -> None:
        """The current stream died; the next continues after the text sent (or, none: restarts)."""
        self.before = self.total if partial else 0
        self._continued = self._continued or partial
        self._reported = self._chunks_since = 0

    def answer_usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """An upstream's usage as the whole answer's: earlier streams' tokens, the first prompt.

        A continuation's prompt holds the partial answer, so its own prompt_* counts are the
        original prompt's when a first stream reported them (else they are left as they are).
        """
        if not self._continued:
            return usage
        merged = dict(usage)
        if self._prompt_usage is not None:
            merged.update({k: v for k, v in self._prompt_usage.items() if k.startswith("prompt_")})
        merged["completion_tokens"] = self.before + int(usage.get("completion_tokens") or 0)
        merged["total_tokens"] = int(merged.get("prompt_tokens") or 0) + merged["completion_tokens"]
        return merged

    def finished_usage(self) -> dict[str, Any] | None:
        """The usage of an answer the cut stream had already sent in full (prompt known only)."""
        if self._prompt_usage is None:
            return None
        return self.answer_usage({"completion_tokens": 0})
