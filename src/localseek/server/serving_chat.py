"""POST /v1/chat/completions (and DeepSeek's /beta prefix completion): render, admit, answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localseek.engine.outputs import RequestOutput
from localseek.errors import InvalidRequestError, LocalseekError
from localseek.server.api_fields import CHAT_FIELDS
from localseek.server.lifecycle import RequestRun, new_request_id
from localseek.server.logprobs import LogprobFormatter
from localseek.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatResponseMessage,
    DeltaMessage,
    ToolCall,
    Usage,
)
from localseek.server.reasoning import CLOSE_TAG, ReasoningSplitter, prompt_opens_reasoning
from localseek.server.refuse_fast import refuse_if_full
from localseek.server.sampling import Limits, build_jobs
from localseek.server.state import ServerState
from localseek.server.streaming import DONE, sse
from localseek.server.structured_output import response_grammar
from localseek.server.text_check import require_text
from localseek.server.thinking import thinking_template_kwargs
from localseek.server.tool_calls import ToolCallStream, parse_tool_calls, tool_call_deltas
from localseek.server.tool_choice import NO_TOOLS, ToolPlan, plan_tools
from localseek.server.tool_prompt import prepare_tool_messages
from localseek.weights.tokenizer import template_variables


@dataclass(frozen=True)
class RenderedChat:
    prompt_ids: list[int]
    starts_in_reasoning: bool
    prefix: bool  # continuing the final assistant message


def _message_dict(message: ChatMessage, index: int) -> dict:
    data = message.model_dump(exclude_none=True, exclude={"prefix"})
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"messages[{index}].content: part type {part.type!r} is not supported "
                    "(text only)",
                    param=f"messages.{index}.content",
                )
            texts.append(part.text)
        data["content"] = "".join(texts)
    elif content is None:
        data["content"] = ""  # templates concatenate content; None would break them
    return data


def _wants_prefix(body: ChatCompletionRequest) -> bool:
    last = body.messages[-1]
    if not (last.prefix or body.continue_final_message):
        return False
    if last.role != "assistant":
        field = "prefix" if last.prefix else "continue_final_message"
        raise InvalidRequestError(
            f"{field}=true is only allowed with a final assistant message, not role {last.role!r}",
            param=f"messages.{len(body.messages) - 1}.prefix" if last.prefix else field,
        )
    return True


def render_chat(
    state: ServerState, body: ChatCompletionRequest, tools: ToolPlan = NO_TOOLS
) -> RenderedChat:
    """Chat template -> prompt token ids (runs in a worker thread: long prompts are slow)."""
    tokenizer = state.engine.tokenizer
    prefix = _wants_prefix(body)
    messages = [_message_dict(m, i) for i, m in enumerate(body.messages)]
    source = tokenizer.chat_template
    reads_tools = bool(source) and "tools" in template_variables(source)
    messages, tool_defs = prepare_tool_messages(
        messages, tools.tools, template_reads_tools=reads_tools
    )
    kwargs: dict = {}
    if body.thinking is not None:
        enabled = body.thinking.type == "enabled"
        kwargs.update(thinking_template_kwargs(enabled, tokenizer.chat_template))
    kwargs.update(body.chat_template_kwargs or {})  # explicit template variables win
    for reserved in ("messages", "add_generation_prompt", "continue_final_message", "tools"):
        kwargs.pop(reserved, None)
    try:
        text = tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=body.add_generation_prompt and not prefix,
            continue_final_message=prefix,
            tools=tool_defs,
            **kwargs,
        )
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
        # A template written for other message shapes fails on this one: the client's input.
        raise InvalidRequestError(
            f"the chat template cannot render these messages: {exc}", param="messages"
        ) from exc
    # The template already carries BOS where the model wants it.
    prompt_ids = tokenizer.encode(require_text(text, "messages"), add_special_tokens=False)
    if not prompt_ids:
        raise InvalidRequestError("the rendered prompt is empty", param="messages")
    return RenderedChat(prompt_ids, state.reasoning and prompt_opens_reasoning(text), prefix)


def _reasoning_end(state: ServerState, rendered: RenderedChat) -> int | None:
    """When the prompt opened a think block, a grammar covers only the answer after `</think>`
    (a single token in R1's vocabulary); None: it covers the whole output."""
    if not rendered.starts_in_reasoning:
        return None
    return state.engine.tokenizer.token_to_id(CLOSE_TAG)


class ChatService:
    def __init__(self, state: ServerState):
        self.state = state

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response:
        state = self.state
        CHAT_FIELDS.check(body.model_extra)
        model = state.resolve_model(body.model)
        refuse_if_full(state, request, body.priority, body.n)  # before rendering: refuse fast
        tools = plan_tools(body)
        rendered = await asyncio.to_thread(render_chat, state, body, tools)
        grammar = await asyncio.to_thread(response_grammar, body, tools)
        top = body.top_logprobs or 0
        wanted = body.max_completion_tokens or body.max_tokens
        jobs = build_jobs(
            body,
            [rendered.prompt_ids],
            Limits(state.config, state.engine.max_model_len, len(state.engine.tokenizer)),
            requested_max_tokens=wanted,
            default_max_tokens=state.config.default_max_tokens,
            logprobs=top if body.logprobs else None,
            param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
            prompt_param="messages",
            grammar=grammar,
            grammar_after_token_id=_reasoning_end(state, rendered) if grammar else None,
        )
        request_id = new_request_id("chatcmpl")
        view = _ChatView(state, body, rendered, request_id, model, top, tools)
        # Nothing may fail between admission and handing the run to collect()/stream(), which
        # release its slots whatever happens.
        run = await RequestRun.admit(
            state, request, jobs, request_id=request_id, body_priority=body.priority
        )
        if body.stream:
            return run.stream(view.events)
        finals = await run.collect(request)
        return JSONResponse(view.response(finals).model_dump(exclude_none=False))


class _ChatView:
    """Turns engine outputs into one request's response or chunks."""

    def __init__(
        self,
        state: ServerState,
        body: ChatCompletionRequest,
        rendered: RenderedChat,
        request_id: str,
        model: str,
        top: int,
        tools: ToolPlan,
    ):
        self.body = body
        self.tools = tools
        self.rendered = rendered
        self.id = request_id
        self.model = model
        self.created = int(time.time())
        self.reasoning = state.reasoning
        tokenizer = state.engine.tokenizer
        self.logprobs = (
            LogprobFormatter(lambda t: tokenizer.decode([t], skip_special_tokens=False), top)
            if body.logprobs
            else None
        )
        self._latest: dict[int, RequestOutput] = {}  # each choice's newest output (streaming)

    def _split(self, text: str) -> tuple[str | None, str]:
        if not self.reasoning:
            return None, text
        splitter = ReasoningSplitter(self.rendered.starts_in_reasoning)
        r1, c1 = splitter.feed(text)
        r2, c2 = splitter.finish()
        return (r1 + r2) or None, c1 + c2

    def usage(self, finals: dict[int, RequestOutput]) -> Usage:
        first = finals[min(finals)] if finals else None
        cached = first.num_cached_tokens if first else 0
        completion = sum(len(out.token_ids) for out in finals.values())
        return Usage.of(len(self.rendered.prompt_ids), completion, cached)

    def response(self, finals: dict[int, RequestOutput]) -> ChatCompletionResponse:
        choices = []
        for index in sorted(finals):
            out = finals[index]
            reasoning, content = self._split(out.text)
            logprobs = None
            if self.logprobs is not None:
                logprobs = self.logprobs.chat(out.token_ids, out.logprobs or [])
            content, calls, finish_reason = self._answer(content, out.finish_reason)
            message = ChatResponseMessage(
                content=content, reasoning_content=reasoning, tool_calls=calls
            )
            choices.append(
                ChatChoice(
                    index=index, message=message, logprobs=logprobs, finish_reason=finish_reason
                )
            )
        return ChatCompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage(finals),
        )

    def _answer(
        self, content: str, finish_reason: str | None
    ) -> tuple[str | None, list[ToolCall] | None, str | None]:
        """(content, tool calls, finish_reason) of a whole answer."""
        if not self.tools.parse:
            return content, None, finish_reason
        parsed = parse_tool_calls(content, forced=self.tools.is_forced)
        calls = parsed.calls if self.tools.parallel else parsed.calls[:1]
        if not calls:
            return content, None, finish_reason
        return parsed.content, calls, "tool_calls"

    def _chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        if usage is None and self.body.usage_in_every_chunk:
            # Tokens generated so far: the gateway shortens a continuation's budget by them.
            usage = self.usage(self._latest)
        return sse(
            ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
            )
        )

    async def events(self, run: RequestRun) -> AsyncIterator[str]:
        splitters = {
            index: ReasoningSplitter(self.rendered.starts_in_reasoning)
            for index in run.fanout.indices
        }
        calls = {index: ToolCallStream(forced=self.tools.is_forced) for index in splitters}
        for index in splitters:
            yield self._chunk(
                [ChatChunkChoice(index=index, delta=DeltaMessage(role="assistant", content=""))]
            )
        finals: dict[int, RequestOutput] = {}
        try:
            async for index, out in run.fanout.stream():
                self._latest[index] = out
                for chunk in self._deltas(index, out, splitters[index], calls[index]):
                    yield chunk
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

    def _deltas(
        self,
        index: int,
        out: RequestOutput,
        splitter: ReasoningSplitter,
        calls_stream: ToolCallStream,
    ) -> list[str]:
        if self.reasoning:
            reasoning, content = splitter.feed(out.delta_text)
            if out.finished:
                tail_r, tail_c = splitter.finish()
                reasoning, content = reasoning + tail_r, content + tail_c
        else:
            reasoning, content = "", out.delta_text
        calls: list[ToolCall] = []
        if self.tools.parse:
            content = calls_stream.feed(content)
            if out.finished:
                tail, calls = calls_stream.finish()
                content += tail
                calls = calls if self.tools.parallel else calls[:1]
        logprobs = None
        if self.logprobs is not None and out.delta_token_ids:
            logprobs = self.logprobs.chat(out.delta_token_ids, out.delta_logprobs or [])
        chunks = []
        if reasoning or content or logprobs is not None:
            delta = DeltaMessage(content=content or None, reasoning_content=reasoning or None)
            chunks.append(
                self._chunk([ChatChunkChoice(index=index, delta=delta, logprobs=logprobs)])
            )
        if calls:
            delta = DeltaMessage(tool_calls=tool_call_deltas(calls))
            chunks.append(self._chunk([ChatChunkChoice(index=index, delta=delta)]))
        if out.finished:
            finish_reason = "tool_calls" if calls else out.finish_reason
            chunks.append(
                self._chunk(
                    [
                        ChatChunkChoice(
                            index=index, delta=DeltaMessage(), finish_reason=finish_reason
                        )
                    ]
                )
            )
        return chunks
