"""OpenAI (and DeepSeek) request and response bodies as pydantic models.

Requests ignore unknown fields, as OpenAI's clients expect of compatible servers, and reject
non-finite numbers (JSON allows NaN through Python's parser; a NaN temperature must not reach
the sampler). Responses are built as plain models and serialized without `None` holes only
where OpenAI omits a field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_INT64_MAX = (1 << 63) - 1
_MAX_STOP = 16

Int64 = Annotated[int, Field(ge=-(1 << 63), le=_INT64_MAX)]
Priority = Annotated[int, Field(ge=-(1 << 31), le=(1 << 31) - 1)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopField = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=_MAX_STOP)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(_Request):
    include_usage: bool = False  # one final chunk with the whole answer's usage
    # vLLM's extension (with include_usage): every chunk also carries the usage so far, which
    # is how the gateway knows how many tokens reached the client if the stream is cut.
    continuous_usage_stats: bool = False


class _SamplingFields(_Request):
    """Fields both endpoints share (OpenAI's, plus vLLM/DeepSeek extras users rely on)."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=-1, le=1 << 20)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: Annotated[float, Field(ge=0.01, le=100.0)] | None = None
    seed: Int64 | None = None
    stop: StopField | None = None
    stop_token_ids: (
        Annotated[list[Annotated[int, Field(ge=0, le=_INT64_MAX)]], Field(max_length=64)] | None
    ) = None
    n: Annotated[int, Field(ge=1, le=1 << 16)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    priority: Priority | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0, le=1 << 20)] = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @property
    def usage_in_every_chunk(self) -> bool:
        """Streamed chunks each carry the usage so far (vLLM's `continuous_usage_stats`)."""
        options = self.stream_options
        return options is not None and options.include_usage and options.continuous_usage_stats


class ContentPart(_Request):
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One conversation turn; extra keys (name, tool_calls...) reach the chat template."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    role: Annotated[str, Field(min_length=1, max_length=64)]
    content: str | list[ContentPart] | None = None
    prefix: bool = False  # DeepSeek chat prefix completion: continue this assistant message
    reasoning_content: str | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    add_generation_prompt: bool = True
    # vLLM's spelling of DeepSeek's `prefix: true` (the gateway's mid-stream continuation uses it).
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_SamplingFields):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0, le=_INT64_MAX)]], Field(min_length=1)]
        | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]
    )
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False


# ---- responses ----------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    """OpenAI usage plus DeepSeek's context-cache fields, all exact."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_cache_hit_tokens: int = 0
    prompt_cache_miss_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_cache_hit_tokens=cached_tokens,
            prompt_cache_miss_tokens=prompt_tokens - cached_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
        )


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "localseek"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
