"""Every error either app answers with, in OpenAI's shape `{"error": {message, type, param, code}}`.

One mapping for the server and the gateway: typed errors (errors.py) carry their status; HTTP
errors (unknown route 404, wrong method 405) and validation errors are translated here; anything
unexpected becomes a 500 in the same shape, logged with its traceback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from localseek.errors import DrainingError, LocalseekError, OverloadedError

logger = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
}


def error_type_for_status(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    if status in _HTTP_TYPES:
        return _HTTP_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: LocalseekError) -> JSONResponse:
    headers = {}
    if isinstance(exc, OverloadedError | DrainingError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return JSONResponse(exc.to_openai(), status_code=exc.http_status, headers=headers)


def answer_error(exc: LocalseekError, count: Callable[[int], None]) -> JSONResponse:
    """The response to a typed error, counted by `count(status)`: what the exception handler
    answers, and what a middleware answering before the routes sends (the early 429)."""
    count(exc.http_status)
    if exc.http_status >= 500 and not isinstance(exc, OverloadedError):
        logger.warning("request failed: %s", exc.message)
    return error_response(exc)


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _is_type_tag(part: object) -> bool:
    # pydantic names the union member it tried (`stop.str`, `prompt.list[int]`): not a field.
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return f"malformed JSON body: {detail}".rstrip(": "), None
    loc = [str(part) for part in first.get("loc", ()) if part != "body" and not _is_type_tag(part)]
    param = ".".join(loc) or None
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    where = f"{param}: " if param else ""
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if first.get("type") == "missing":
        return f"{where}field required{more}", param
    return f"{where}{first.get('msg', 'invalid value')}, got {shown}{more}", param


def install_error_handlers(app: FastAPI, on_error: Callable[[int], None] | None = None) -> None:
    """Map typed errors, validation errors and HTTP errors to OpenAI-shaped JSON.

    `on_error(status)` is called once per error answered (the apps count them in a metric).
    """
    count = on_error or (lambda status: None)

    async def localseek_error(request: Request, exc: LocalseekError) -> JSONResponse:
        return answer_error(exc, count)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count(400)
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        count(exc.status_code)
        error_type = error_type_for_status(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            error_body(message, error_type), status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, never a client mistake: log it with its traceback, answer in OpenAI's shape.
        count(500)
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(f"internal server error: {type(exc).__name__}", "server_error"),
            status_code=500,
        )

    app.add_exception_handler(LocalseekError, localseek_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
