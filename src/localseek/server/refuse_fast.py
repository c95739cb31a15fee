"""The 429 a full server owes a request, answered before any work is spent on it.

Two checks, the cheaper first:

- `RefuseFastMiddleware` (pure ASGI) answers before FastAPI parses the JSON body. Parsing and
  validating a chat request costs the event loop more than the refusal itself, and during a
  burst every one of those costs queues behind the others on the one loop thread.
- `refuse_if_full`, called by the services once the body is parsed, judges the requests the
  middleware must let through (a body that sets `priority`), before the chat template is
  rendered and the prompt tokenized.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from localseek.api.errors import answer_error
from localseek.api.request_body import read_body, replay
from localseek.errors import InvalidRequestError, OverloadedError
from localseek.server.auth import has_valid_api_key
from localseek.server.request_options import request_options
from localseek.server.state import ServerState

# A body's `priority` wins over X-Priority, and a better priority may displace waiting work, so
# a body that sets one must be parsed to be judged. Without parsing, a body sets none when no
# key could spell it: the word is absent, and so is any \u escape of one of its letters
# (p r i o t y). A false alarm (the word in a prompt) costs only the parse.
_MAY_SET_PRIORITY = re.compile(rb"priority|\\u00(?:7[0249]|6[9fF])")


def refuse_if_full(state: ServerState, request: Request, body_priority: int | None, n: int) -> None:
    """Raise OverloadedError (429 + Retry-After) if admission will refuse this request whatever
    its prompt; called before chat-template rendering and tokenization."""
    gate = state.gate
    if gate is None:
        return  # no engine yet: state.engine answers 503 further on
    priority = request_options(request.headers, body_priority, state.config).priority
    gate.refuse_early(priority, n)


class RefuseFastMiddleware:
    """The completion routes' 429, sent before the body is parsed; installed inside
    BodyLimitMiddleware, which bounds the body read here.

    A request is refused here only when its route would refuse it too, whatever the rest of
    its body says: its API key is right (else the route's 401), its X-Priority and
    X-Request-Timeout headers are valid (else the route's 400), its body sets no `priority`,
    and admission refuses even its smallest form (n=1, one engine slot). Anything else goes
    on unchanged. While loading, draining or after an engine crash it steps aside as well.

    So, while the server is full, a body that would be a 400 (malformed JSON, an unknown
    field) or a 404 (an unknown model) is answered 429: an overloaded server says "busy"
    before it reads the request, as a rate limiter in front of it would, and the retry after
    Retry-After gets the 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        state: ServerState,
        paths: frozenset[str],
        on_error: Callable[[int], None],
    ):
        self.app = app
        self.state = state
        self.paths = paths  # the completion routes, under every prefix
        self._count_error = on_error  # the apps' error counter, as the exception handler's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        priority = self._refused_priority(scope)
        if priority is None:
            await self.app(scope, receive, send)  # the body stays unread
            return
        body = await read_body(receive)
        if body is None:
            return  # the client left while sending; nothing to answer
        receive = replay(body, receive)
        gate = self.state.gate
        if gate is not None and _MAY_SET_PRIORITY.search(body) is None:
            try:
                # Again, after the await: a slot may have freed; counts the refusal if not.
                gate.refuse_early(priority, 1)
            except OverloadedError as exc:
                await answer_error(exc, self._count_error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refused_priority(self, scope: Scope) -> int | None:
        """The request's priority by its headers, if admission refuses that priority now."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return None
        state = self.state
        gate = state.gate
        if gate is None or not state.ready():
            return None  # the route's 503 (or its own refusal) stands
        headers = Headers(scope=scope)
        if not has_valid_api_key(headers, state.config.api_key):
            return None  # the route answers 401
        try:
            priority = request_options(headers, None, state.config).priority
        except InvalidRequestError:
            return None  # the route answers 400 for a bad header before it refuses
        if gate.queue.certain_refusal(priority) is None:
            return None
        return priority
