"""A client request as the gateway sees it: validated body, tenant, policy verdict, deadline."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from localseek.errors import InvalidRequestError
from localseek.gateway.config import TenantConfig
from localseek.gateway.policy import Classification

ROUTES = {"chat": "chat/completions", "completions": "completions"}
MAX_JSON_DEPTH = 64  # deeper bodies are refused: nothing in the OpenAI API nests past ~10


@dataclass(frozen=True)
class GatewayRequest:
    route: str  # chat | completions
    body: dict[str, Any]
    tenant: TenantConfig
    classification: Classification
    estimated_tokens: int  # prompt estimate + max output, charged against tokens/min
    deadline: float  # event-loop time by which the request must be answered
    affinity_key: str | None
    cache_key: str | None

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def cloud_ok(self) -> bool:
        return not self.classification.local_only


def parse_body(route: str, raw: bytes) -> dict[str, Any]:
    """The JSON body, checked enough that no malformed request reaches an upstream."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidRequestError(
            f"request body nests deeper than {MAX_JSON_DEPTH} levels"
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise InvalidRequestError(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    encode_body(body)  # a lone surrogate cannot be forwarded: refuse it here, as the client's
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string", param="model"
        )
    if route == "chat":
        _check_messages(body.get("messages"))
    elif not isinstance(body.get("prompt"), (str, list)):
        raise InvalidRequestError("'prompt' is required (a string or a list)", param="prompt")
    _check_number(body, "temperature", 0.0, 2.0)
    _check_number(body, "top_p", 0.0, 1.0)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InvalidRequestError(
                f"'{name}' must be an integer >= 1, got {value!r}", param=name
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequestError(
            f"'stream' must be a boolean, got {body['stream']!r}", param="stream"
        )
    return body


def encode_body(body: dict[str, Any]) -> bytes:
    """The body as UTF-8 JSON for an upstream; InvalidRequestError if it cannot be encoded."""
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            "request body contains a lone UTF-16 surrogate (e.g. \\ud800), which is not text"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"request body cannot be encoded as JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise InvalidRequestError(f"request body contains {name}, which is not valid JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(
                f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]"
            )


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequestError(
            f"'{name}' must be a number in [{low}, {high}], got {value!r}", param=name
        )


def estimate_tokens(body: dict[str, Any], default_max_tokens: int) -> int:
    """Prompt tokens (~4 characters each) plus the most output the request may produce."""
    source = body.get("messages") if "messages" in body else body.get("prompt")
    chars = len(json.dumps(source, ensure_ascii=False)) if source is not None else 0
    out = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    return math.ceil(chars / 4) + int(out) * int(body.get("n") or 1)


def usage_tokens(response: dict[str, Any] | None) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from an OpenAI response's usage, if present."""
    usage = (response or {}).get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None
