"""refuse_if_full: the 429 a full server owes a request, before any work is spent on it."""

from __future__ import annotations

from starlette.requests import Request

from localseek.server.request_options import request_options
from localseek.server.state import ServerState


def refuse_if_full(state: ServerState, request: Request, body_priority: int | None, n: int) -> None:
    """Raise OverloadedError (429 + Retry-After) if admission will refuse this request whatever
    its prompt; called before chat-template rendering and tokenization."""
    gate = state.gate
    if gate is None:
        return  # no engine yet: state.engine answers 503 further on
    priority = request_options(request.headers, body_priority, state.config).priority
    gate.refuse_early(priority, n)
