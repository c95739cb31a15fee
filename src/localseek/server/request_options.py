"""Per-request admission options from the body and headers: priority and start deadline."""

from __future__ import annotations

import math
from dataclasses import dataclass

from starlette.datastructures import Headers

from localseek.errors import InvalidRequestError
from localseek.server.config import ServerConfig

_PRIORITY_RANGE = (-(1 << 31), (1 << 31) - 1)


@dataclass(frozen=True)
class RequestOptions:
    priority: int  # lower is served first (as vLLM and the gateway)
    timeout: float  # seconds the request may wait to start


def request_options(
    headers: Headers, body_priority: int | None, config: ServerConfig
) -> RequestOptions:
    """`priority` in the body wins over `X-Priority`; `X-Request-Timeout` bounds the wait."""
    priority = body_priority
    if priority is None:
        raw = headers.get("x-priority")
        priority = 0 if raw is None else _parse_priority(raw)
    timeout = config.default_request_timeout
    raw_timeout = headers.get("x-request-timeout")
    if raw_timeout is not None:
        timeout = _parse_timeout(raw_timeout, config.max_request_timeout)
    return RequestOptions(priority, timeout)


def _parse_priority(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidRequestError(
            f"X-Priority must be an integer (lower is served first), got {raw!r}",
            param="X-Priority",
        ) from None
    low, high = _PRIORITY_RANGE
    if not low <= value <= high:
        raise InvalidRequestError(
            f"X-Priority must be in [{low}, {high}], got {value}", param="X-Priority"
        )
    return value


def _parse_timeout(raw: str, maximum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise InvalidRequestError(
            f"X-Request-Timeout must be a number of seconds in (0, {maximum:g}], got {raw!r}",
            param="X-Request-Timeout",
        )
    return value
