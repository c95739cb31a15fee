"""`response_format` or a forced tool call -> the grammar decoding is constrained to (None: free)."""

from __future__ import annotations

from localseek.engine.grammar import json_object_grammar, json_schema_grammar
from localseek.errors import InvalidRequestError
from localseek.server.protocol import ChatCompletionRequest
from localseek.server.tool_calls import forced_call_schema
from localseek.server.tool_choice import ToolPlan


def response_grammar(body: ChatCompletionRequest, tools: ToolPlan) -> str | None:
    """The llguidance grammar for the request's response_format or forced tool call (runs in
    a worker thread: compiling a large schema takes a while)."""
    fmt = body.response_format
    wants_format = fmt is not None and fmt.type != "text"
    if not (wants_format or tools.is_forced):
        return None
    if body.min_tokens > 0:
        raise InvalidRequestError(
            "min_tokens cannot be combined with response_format or a forced tool call: the "
            "JSON may end sooner",
            param="min_tokens",
        )
    if tools.forced is not None:
        if wants_format:
            raise InvalidRequestError(
                "response_format cannot be combined with a forced tool call (tool_choice)",
                param="response_format",
            )
        return json_schema_grammar(forced_call_schema(tools.forced), param="tools")
    assert fmt is not None
    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError(
            'response_format type "json_schema" needs json_schema.schema',
            param="response_format.json_schema",
        )
    return json_schema_grammar(fmt.json_schema.schema_, param="response_format.json_schema.schema")
