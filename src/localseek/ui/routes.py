"""Mounts /ui (the page and its static files) and /ui/status (JSON the page polls) on an app."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from localseek.ui.recent_errors import RecentErrors, RecentErrorsMiddleware

StatusFn = Callable[[], dict[str, Any]]
AuthorizeFn = Callable[[Request], object]  # raises AuthenticationError for a bad key

_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def _static(name: str) -> bytes | None:
    root = resources.files(__package__).joinpath("static")
    if "/" in name or name.startswith(".") or not root.joinpath(name).is_file():
        return None
    return root.joinpath(name).read_bytes()


def install_ui(
    app: FastAPI, kind: str, status: StatusFn, authorize: AuthorizeFn | None = None
) -> None:
    """Serve the page at /ui; `status()` describes the process (model, load, replicas...).

    The page is plain HTML, CSS and JavaScript shipped in the package: nothing is fetched
    from the internet, and there is no build step. /ui/status asks for the same API key as
    the completion routes (`authorize`): recent error messages can quote a request.
    """
    errors = RecentErrors()
    app.add_middleware(RecentErrorsMiddleware, errors=errors)

    async def page() -> Response:
        return HTMLResponse(_static("index.html") or b"", headers={"Cache-Control": "no-cache"})

    async def static(name: str) -> Response:
        data = _static(name)
        if data is None:
            return JSONResponse({"error": {"message": f"no file {name!r}"}}, status_code=404)
        suffix = name[name.rfind(".") :]
        return Response(data, media_type=_TYPES.get(suffix, "application/octet-stream"))

    async def status_json(request: Request) -> JSONResponse:
        if authorize is not None:
            authorize(request)
        body = {"kind": kind, **status(), "errors": errors.as_json()}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    app.add_api_route("/ui", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/", slash, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/static/{name}", static, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/status", status_json, methods=["GET"], include_in_schema=False)
