"""The gateway's admin API: model-version weights, promote, rollback, config reload.

Every route needs `Authorization: Bearer <key>` with a key from the config's `admin:`
section; with no admin keys configured the API is disabled (403). Changes made here live
in this gateway process only: with several gateway replicas call each one, and write the
weights into the config for them to survive a restart.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from localseek.errors import (
    AuthenticationError,
    InvalidRequestError,
    LocalseekError,
    PermissionDeniedError,
)

if TYPE_CHECKING:
    from localseek.gateway.front import GatewayFront


def build_admin_app(front: GatewayFront) -> FastAPI:
    """Routes under /admin, acting on `front`'s version router and generation."""

    def authorize(request: Request) -> None:
        keys = front.current.admin_keys
        if not keys:
            raise PermissionDeniedError(
                "the admin API is disabled: set admin.api_key_envs in the gateway config",
                code="admin_disabled",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(token.encode(), k.encode()) for k in keys
        ):
            raise AuthenticationError(
                "invalid or missing admin key: send Authorization: Bearer <key>"
            )

    app = FastAPI(title="localseek gateway admin", dependencies=[Depends(authorize)])

    @app.exception_handler(LocalseekError)
    async def _error(_: Request, exc: LocalseekError) -> JSONResponse:
        return JSONResponse(exc.to_openai(), status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown admin routes and methods, in the same error shape as everything else.
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        error = {"message": str(exc.detail), "type": kind, "param": None, "code": None}
        return JSONResponse({"error": error}, status_code=exc.status_code)

    @app.get("/admin/models")
    async def models() -> dict[str, Any]:
        return {"models": front.router.snapshot()}

    @app.put("/admin/models/{name}/weights")
    async def weights(name: str, request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        new = body.get("weights")
        if not isinstance(new, dict) or not new:
            raise InvalidRequestError(
                'body must be {"weights": {"<version>": <int>, ...}}', param="weights"
            )
        return _changed(name, front.router.set_weights(name, new))

    @app.post("/admin/models/{name}/promote")
    async def promote(name: str, request: Request) -> dict[str, Any]:
        version = (await _json_object(request)).get("version")
        if not isinstance(version, str):
            raise InvalidRequestError('body must be {"version": "<name>"}', param="version")
        return _changed(name, front.router.promote(name, version))

    @app.post("/admin/models/{name}/rollback")
    async def rollback(name: str) -> dict[str, Any]:
        return _changed(name, front.router.rollback(name))

    @app.post("/admin/reload")
    async def reload() -> dict[str, Any]:
        return await front.reload()

    return app


def _changed(name: str, weights: dict[str, int]) -> dict[str, Any]:
    total = sum(weights.values())
    shares = {v: math.floor(1000 * w / total) / 10 for v, w in weights.items()}
    return {"model": name, "weights": weights, "percent": shares}


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return body
