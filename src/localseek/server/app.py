"""The server's FastAPI app factory: routes, auth, error handlers, /health, /load, /metrics.

Routes are thin: parse (pydantic), hand to a service, return. Everything the routes share
lives in one ServerState built here, so two apps can run in one process (tests do).
DeepSeek's SDK setups use base URLs with and without `/v1`, and `/beta` for prefix
completion, so the completion routes are served under each of those prefixes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from localseek import __version__
from localseek.api.body_limit import BodyLimitMiddleware
from localseek.api.errors import error_body, install_error_handlers
from localseek.api.load import LoadReport
from localseek.errors import AuthenticationError
from localseek.server.auth import has_valid_api_key
from localseek.server.config import ServerConfig
from localseek.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
)
from localseek.server.refuse_fast import RefuseFastMiddleware
from localseek.server.serving_chat import ChatService
from localseek.server.serving_completion import CompletionService
from localseek.server.serving_embedding import EmbeddingService
from localseek.server.state import ServerState
from localseek.server.ui_status import server_ui_status
from localseek.ui.routes import install_ui

if TYPE_CHECKING:
    from localseek.engine.async_engine import AsyncEngine

_PREFIXES = ("/v1", "", "/beta")
_COMPLETION_PATHS = frozenset(
    prefix + route for prefix in _PREFIXES for route in ("/chat/completions", "/completions")
)


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _authorize(request: Request) -> None:
    if not has_valid_api_key(request.headers, _state(request).config.api_key):
        raise AuthenticationError(
            "invalid or missing API key: send `Authorization: Bearer <key>`", param="authorization"
        )


async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await ChatService(_state(request)).create(body, request)


async def completions(body: CompletionRequest, request: Request) -> Response:
    return await CompletionService(_state(request)).create(body, request)


async def list_models(request: Request) -> ModelList:
    return _state(request).model_list()


async def get_model(model_id: str, request: Request) -> ModelCard:
    return _state(request).model_card(model_id)


async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    # Built and validated once by the service; a response_model would validate every float again.
    response = await EmbeddingService(_state(request)).create(body)
    return JSONResponse(response.model_dump())


async def health(request: Request) -> JSONResponse:
    state = _state(request)
    if state.ready():
        return JSONResponse({"status": "ok", "model": state.served_model})
    if state.drain.active:
        message = "the server is draining before it shuts down"
    else:
        message = "the model is loading or the engine is not running"
    return JSONResponse(error_body(message, "service_unavailable"), status_code=503)


async def load(request: Request) -> LoadReport:
    return _state(request).load_report()


async def metrics(request: Request) -> Response:
    return Response(generate_latest(_state(request).registry), media_type=CONTENT_TYPE_LATEST)


def build_app(engine: AsyncEngine | None, config: ServerConfig) -> FastAPI:
    """The app serving `engine`; with None it answers 503 until `app.state.server.attach()`."""
    app = FastAPI(title="localseek", version=__version__)
    state = ServerState(config, engine)
    app.state.server = state

    def count_error(status: int) -> None:
        state.metrics.request_errors.labels(str(status)).inc()

    install_error_handlers(app, count_error)
    auth = [Depends(_authorize)]
    for prefix in _PREFIXES:
        shown = prefix == "/v1"
        app.add_api_route(
            f"{prefix}/chat/completions",
            chat_completions,
            methods=["POST"],
            dependencies=auth,
            include_in_schema=shown,
        )
        app.add_api_route(
            f"{prefix}/completions",
            completions,
            methods=["POST"],
            dependencies=auth,
            include_in_schema=shown,
        )
        app.add_api_route(
            f"{prefix}/models",
            list_models,
            methods=["GET"],
            dependencies=auth,
            include_in_schema=shown,
            response_model=ModelList,
        )
        app.add_api_route(
            f"{prefix}/models/{{model_id:path}}",
            get_model,
            methods=["GET"],
            dependencies=auth,
            include_in_schema=shown,
            response_model=ModelCard,
        )
        app.add_api_route(
            f"{prefix}/embeddings",
            embeddings,
            methods=["POST"],
            dependencies=auth,
            include_in_schema=shown,
        )
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/load", load, methods=["GET"], response_model=LoadReport)
    app.add_api_route("/metrics", metrics, methods=["GET"])
    # Added first, so it runs inside the body limit (the last added runs outermost).
    app.add_middleware(
        RefuseFastMiddleware, state=state, paths=_COMPLETION_PATHS, on_error=count_error
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    install_ui(app, "server", lambda: server_ui_status(state), _authorize)
    return app
