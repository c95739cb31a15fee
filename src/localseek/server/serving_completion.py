"""POST /v1/completions: text or token-id prompts (one or a batch, or FIM), admitted and answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localseek.engine.outputs import RequestOutput
from localseek.errors import InvalidRequestError, LocalseekError
from localseek.server.api_fields import COMPLETION_FIELDS
from localseek.server.fim import fim_format
from localseek.server.lifecycle import RequestRun, new_request_id
from localseek.server.logprobs import LogprobFormatter
from localseek.server.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from localseek.server.refuse_fast import refuse_if_full
from localseek.server.sampling import Limits, build_jobs
from localseek.server.state import ServerState
from localseek.server.streaming import DONE, sse
from localseek.server.text_check import require_text

_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def tokenize_prompts(state: ServerState, prompt: object, suffix: str | None) -> list[list[int]]:
    """Every accepted prompt shape as token-id lists (runs in a worker thread).

    With a suffix, each text prompt becomes a fill-in-the-middle prompt in the model's FIM
    tokens (a 400 naming the model when its vocabulary has none).
    """
    tokenizer = state.engine.tokenizer
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif prompt and all(isinstance(t, int) for t in prompt):  # type: ignore[union-attr]
        prompts = [list(prompt)]  # type: ignore[arg-type]
    else:
        prompts = list(prompt)  # type: ignore[call-overload]
    if suffix is not None:
        prompts = _fill_in_the_middle(state, prompts, suffix)
    out = []
    for i, p in enumerate(prompts):
        ids = (
            tokenizer.encode(require_text(p, "prompt"))
            if isinstance(p, str)
            else [int(t) for t in p]
        )
        if not ids:
            raise InvalidRequestError(f"prompt {i} is empty", param="prompt")
        out.append(ids)
    return out


def _fill_in_the_middle(state: ServerState, prompts: list, suffix: str) -> list[str]:
    fmt = fim_format(state.engine.tokenizer)
    if fmt is None:
        raise InvalidRequestError(
            f"the model {state.served_model!r} has no fill-in-the-middle tokens, so `suffix` "
            "cannot be used; serve a FIM-trained code model (DeepSeek-Coder, Qwen2.5-Coder...)",
            param="suffix",
        )
    if not all(isinstance(p, str) for p in prompts):
        raise InvalidRequestError("suffix needs text prompts, not token ids", param="suffix")
    return [fmt.prompt(p, suffix) for p in prompts]


class CompletionService:
    def __init__(self, state: ServerState):
        self.state = state

    async def create(self, body: CompletionRequest, request: Request) -> Response:
        state = self.state
        COMPLETION_FIELDS.check(body.model_extra)
        model = state.resolve_model(body.model)
        if body.stream and body.echo:
            raise InvalidRequestError("echo is not supported with stream=true", param="echo")
        if body.echo and body.suffix is not None:
            raise InvalidRequestError("echo is not supported with suffix", param="echo")
        refuse_if_full(state, request, body.priority, body.n)  # before tokenizing: refuse fast
        prompts = await asyncio.to_thread(tokenize_prompts, state, body.prompt, body.suffix)
        jobs = build_jobs(
            body,
            prompts,
            Limits(state.config, state.engine.max_model_len, len(state.engine.tokenizer)),
            requested_max_tokens=body.max_tokens,
            default_max_tokens=_DEFAULT_MAX_TOKENS,
            logprobs=body.logprobs,
        )
        request_id = new_request_id("cmpl")
        view = _CompletionView(state, body, prompts, request_id, model)
        run = await RequestRun.admit(
            state, request, jobs, request_id=request_id, body_priority=body.priority
        )
        if body.stream:
            return run.stream(view.events)
        finals = await run.collect(request)
        return JSONResponse(view.response(finals).model_dump())


class _CompletionView:
    def __init__(
        self,
        state: ServerState,
        body: CompletionRequest,
        prompts: list[list[int]],
        request_id: str,
        model: str,
    ):
        self.body = body
        self.prompts = prompts
        self.id = request_id
        self.model = model
        self.created = int(time.time())
        tokenizer = state.engine.tokenizer
        self._decode = tokenizer.decode
        self.logprobs = (
            LogprobFormatter(
                lambda t: tokenizer.decode([t], skip_special_tokens=False), body.logprobs
            )
            if body.logprobs is not None
            else None
        )
        self._offsets: dict[int, int] = {}  # characters streamed so far per choice
        self._latest: dict[int, RequestOutput] = {}  # each choice's newest output (streaming)

    def usage(self, finals: dict[int, RequestOutput]) -> Usage:
        n = self.body.n
        cached = sum(
            finals[p * n].num_cached_tokens for p in range(len(self.prompts)) if p * n in finals
        )
        prompt_tokens = sum(len(p) for p in self.prompts)
        completion = sum(len(out.token_ids) for out in finals.values())
        return Usage.of(prompt_tokens, completion, cached)

    def response(self, finals: dict[int, RequestOutput]) -> CompletionResponse:
        choices = []
        for index in sorted(finals):
            out = finals[index]
            prefix = ""
            if self.body.echo:
                prefix = self._decode(self.prompts[index // self.body.n])
            logprobs = None
            if self.logprobs is not None:
                logprobs = self.logprobs.completion(out.token_ids, out.logprobs or [], len(prefix))
            choices.append(
                CompletionChoice(
                    index=index,
                    text=prefix + out.text,
                    logprobs=logprobs,
                    finish_reason=out.finish_reason,
                )
            )
        return CompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage(finals),
        )

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        if usage is None and self.body.usage_in_every_chunk:
            usage = self.usage(self._latest)
        return sse(
            CompletionResponse(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
            )
        )

    async def events(self, run: RequestRun) -> AsyncIterator[str]:
        finals: dict[int, RequestOutput] = {}
        try:
            async for index, out in run.fanout.stream():
                self._latest[index] = out
                logprobs = None
                if self.logprobs is not None and out.delta_token_ids:
                    offset = self._offsets.get(index, 0)
                    logprobs = self.logprobs.completion(
                        out.delta_token_ids, out.delta_logprobs or [], offset
                    )
                self._offsets[index] = self._offsets.get(index, 0) + len(out.delta_text)
                if out.delta_text or logprobs is not None or out.finished:
                    yield self._chunk(
                        [
                            CompletionChoice(
                                index=index,
                                text=out.delta_text,
                                logprobs=logprobs,
                                finish_reason=out.finish_reason if out.finished else None,
                            )
                        ]
                    )
                if out.finished:
                    finals[index] = out
        except LocalseekError as exc:
            yield sse(exc.to_openai())
            yield DONE
            return
        options = self.body.stream_options
        if options is not None and options.include_usage:
            yield self._chunk([], usage=self.usage(finals))
        yield DONE
