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
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
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
