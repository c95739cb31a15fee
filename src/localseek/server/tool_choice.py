"""`tools` + `tool_choice` + `parallel_tool_calls` -> what to render, parse and force."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localseek.errors import InvalidRequestError
from localseek.server.protocol import ChatCompletionRequest


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]] | None  # OpenAI tool definitions for the prompt (None: none)
    parse: bool  # look for tool calls in the answer
    forced: list[dict[str, Any]] | None  # one of these functions must be called (a grammar)
    parallel: bool  # more than one call may be returned

    @property
    def is_forced(self) -> bool:
        return self.forced is not None


NO_TOOLS = ToolPlan(None, parse=False, forced=None, parallel=False)


def plan_tools(body: ChatCompletionRequest) -> ToolPlan:
    """OpenAI's rules: "auto" when tools are given, "none" renders no tools and parses no
    calls, "required" or a named function forces exactly one call (constrained decoding)."""
    choice = body.tool_choice
    if not body.tools:
        if choice not in (None, "none"):
            raise InvalidRequestError(
                "tool_choice needs a non-empty tools list", param="tool_choice"
            )
        return NO_TOOLS
    if choice == "none":
        return NO_TOOLS
    tools = [t.model_dump(exclude_none=True) for t in body.tools]
    functions = [t["function"] for t in tools]
    parallel = body.parallel_tool_calls is not False
    if choice is None or choice == "auto":
        return ToolPlan(tools, parse=True, forced=None, parallel=parallel)
    if choice == "required":
        return ToolPlan(tools, parse=True, forced=functions, parallel=False)
    named = [f for f in functions if f["name"] == choice.function.name]
    if not named:
        raise InvalidRequestError(
            f"tool_choice names the function {choice.function.name!r}, which is not in tools "
            f"({', '.join(repr(f['name']) for f in functions)})",
            param="tool_choice.function.name",
        )
    return ToolPlan(tools, parse=True, forced=named, parallel=False)
