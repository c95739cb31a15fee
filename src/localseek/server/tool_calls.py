"""Model output -> OpenAI tool calls: the Hermes/Qwen `<tool_call>` and DeepSeek V3/R1 formats.

`parse_tool_calls` splits a whole answer into content and calls; `ToolCallStream` does the
same on streamed deltas, passing content through until a call's opening marker appears
(holding back text that could still be the start of one) and parsing the calls at the end.
A forced call (tool_choice "required" or a named function) is decoded under a grammar that
makes the whole answer one `{"name": ..., "arguments": {...}}` object (`forced_call_schema`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from localseek.server.protocol import DeltaFunctionCall, DeltaToolCall, FunctionCall, ToolCall

HERMES_OPEN = "<tool_call>"
DEEPSEEK_OPEN = "<｜tool▁calls▁begin｜>"
_OPENERS = (HERMES_OPEN, DEEPSEEK_OPEN)
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
# V3 / R1: function<｜tool▁sep｜>NAME\n```json\nARGS\n```; V3.1: NAME<｜tool▁sep｜>ARGS.
_DEEPSEEK_CALL = re.compile(
    r"<｜tool▁call▁begin｜>(?:function<｜tool▁sep｜>)?(?P<name>[^\n<｜]+?)\s*"
    r"(?:<｜tool▁sep｜>)?\s*(?:```json\s*)?(?P<args>\{.*?\})\s*(?:```)?\s*<｜tool▁call▁end｜>",
    re.DOTALL,
)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ParsedAnswer:
    content: str | None  # text outside the calls (None when empty and there are calls)
    calls: list[ToolCall]


def _call(name: Any, arguments: Any) -> ToolCall | None:
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    text = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=new_call_id(), function=FunctionCall(name=name, arguments=text))


def _from_json_object(text: str) -> ToolCall | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return _call(data.get("name"), data.get("arguments", data.get("parameters", {})))


def parse_tool_calls(text: str, *, forced: bool = False) -> ParsedAnswer:
    """Content and calls of a whole answer; text that is not a well-formed call stays content."""
    if forced:
        call = _from_json_object(text.strip())
        return ParsedAnswer(None, [call]) if call else ParsedAnswer(text, [])
    start = min((i for i in (text.find(o) for o in _OPENERS) if i >= 0), default=-1)
    if start < 0:
        return ParsedAnswer(text, [])
    tail = text[start:]
    if tail.startswith(HERMES_OPEN):
        found = [_from_json_object(m.group(1)) for m in _HERMES_CALL.finditer(tail)]
    else:
        found = [
            _call(m.group("name").strip(), m.group("args")) for m in _DEEPSEEK_CALL.finditer(tail)
        ]
    calls = [c for c in found if c is not None]
    if not calls:
        return ParsedAnswer(text, [])
    return ParsedAnswer(text[:start].rstrip() or None, calls)


class ToolCallStream:
    """Streams content until a call starts; the calls come out at `finish()`."""

    def __init__(self, *, forced: bool):
        self._forced = forced
        self._pending = ""  # text that may be the start of an opening marker
        self._calls_text: str | None = "" if forced else None  # set once a marker was seen
        self._content = ""  # content already streamed

    def feed(self, delta: str) -> str:
        """Content to stream now (possibly empty)."""
        if self._calls_text is not None:
            self._calls_text += delta
            return ""
        text = self._pending + delta
        for opener in _OPENERS:
            at = text.find(opener)
            if at >= 0:
                self._calls_text = text[at:]
                self._pending = ""
                return self._emit(text[:at])
        keep = _partial_marker_length(text)
        self._pending = text[len(text) - keep :] if keep else ""
        return self._emit(text[: len(text) - keep])

    def _emit(self, text: str) -> str:
        self._content += text
        return text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content still to stream, the parsed calls)."""
        if self._calls_text is None:
            tail, self._pending = self._pending, ""
            return self._emit(tail), []
        parsed = parse_tool_calls(self._calls_text, forced=self._forced)
        if parsed.calls:
            return "", parsed.calls
        return self._emit(self._calls_text), []  # not a call after all: it was content


def tool_call_deltas(calls: list[ToolCall]) -> list[DeltaToolCall]:
    """Whole calls as streamed deltas: id, name and all the arguments in one piece each."""
    return [
        DeltaToolCall(
            index=i,
            id=call.id,
            type="function",
            function=DeltaFunctionCall(name=call.function.name, arguments=call.function.arguments),
        )
        for i, call in enumerate(calls)
    ]


def _partial_marker_length(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of an opening marker."""
    best = 0
    for opener in _OPENERS:
        for n in range(min(len(opener) - 1, len(text)), 0, -1):
            if text.endswith(opener[:n]):
                best = max(best, n)
                break
    return best


def forced_call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one call `{"name": ..., "arguments": {...}}` to one of `functions`
    (each an OpenAI function definition: name, parameters)."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}
