"""Tools and tool-call history in the prompt: through the chat template, or a fallback.

A template that reads `tools` (DeepSeek-V3/R1 distills, Qwen2.5, Llama 3.1...) gets the tool
definitions as `tools=` and the history as transformers passes it: each assistant tool call's
`arguments` as a dict, `tool` messages as they are. A template without tool support gets a
system message that lists the tools and asks for `<tool_call>{"name", "arguments"}</tool_call>`
(the format `tool_calls.py` parses), assistant calls written out in that format, and tool
results as user messages wrapped in `<tool_response>`.
"""

from __future__ import annotations

import json
from typing import Any

_FALLBACK_INSTRUCTIONS = (
    "Functions you may call (JSON, one per line):\n{tools}\n"
    'To call one, answer only <tool_call>{{"name": ..., "arguments": {{...}}}}</tool_call> '
    "per call; results come back in <tool_response></tool_response>."
)


def _arguments_dict(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _with_dict_arguments(message: dict) -> dict:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return message
    fixed = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            call = {
                **call,
                "function": {**function, "arguments": _arguments_dict(function.get("arguments"))},
            }
        fixed.append(call)
    return {**message, "tool_calls": fixed}


def _as_text(message: dict) -> dict:
    role = message.get("role")
    if role == "tool":
        return {
            "role": "user",
            "content": f"<tool_response>{message.get('content', '')}</tool_response>",
        }
    calls = message.get("tool_calls")
    if role != "assistant" or not isinstance(calls, list):
        return message
    blocks = []
    for call in calls:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        body = {
            "name": function.get("name"),
            "arguments": _arguments_dict(function.get("arguments")),
        }
        blocks.append(f"<tool_call>{json.dumps(body, ensure_ascii=False)}</tool_call>")
    content = "\n".join(filter(None, [message.get("content") or "", *blocks]))
    return {k: v for k, v in message.items() if k != "tool_calls"} | {"content": content}


def prepare_tool_messages(
    messages: list[dict], tools: list[dict] | None, *, template_reads_tools: bool
) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools for the template's `tools=`): see the module docstring."""
    if template_reads_tools:
        return [_with_dict_arguments(m) for m in messages], tools
    messages = [_as_text(m) for m in messages]
    if not tools:
        return messages, None
    listing = "\n".join(
        json.dumps(t.get("function", t), ensure_ascii=False, separators=(",", ":")) for t in tools
    )
    instructions = _FALLBACK_INSTRUCTIONS.format(tools=listing)
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        merged = f"{first.get('content') or ''}\n\n{instructions}".lstrip()
        return [{**first, "content": merged}, *messages[1:]], None
    return [{"role": "system", "content": instructions}, *messages], None
