"""`response_format` -> the grammar the engine constrains decoding to (None: free text)."""

from __future__ import annotations

from localseek.engine.grammar import json_object_grammar, json_schema_grammar
from localseek.errors import InvalidRequestError
from localseek.server.protocol import ChatCompletionRequest


def response_grammar(body: ChatCompletionRequest) -> str | None:
    """The llguidance grammar for the request's response_format (runs in a worker thread:
    compiling a large schema takes a while)."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if body.min_tokens > 0:
        raise InvalidRequestError(
            "min_tokens cannot be combined with response_format: the JSON may end sooner",
            param="min_tokens",
        )
    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError(
            'response_format type "json_schema" needs json_schema.schema',
            param="response_format.json_schema",
        )
    return json_schema_grammar(fmt.json_schema.schema_, param="response_format.json_schema.schema")
