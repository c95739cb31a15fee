"""OpenAI (and DeepSeek) request and response bodies as pydantic models.

Top-level request fields a model does not declare are kept in `model_extra` and judged by
`api_fields.py` (refused, ignored, or unknown: a 400 naming them); nested objects reject unknown
keys outright. Requests reject non-finite numbers (JSON allows NaN through Python's parser; a NaN temperature must not reach
the sampler). Responses are built as plain models and serialized without `None` holes only
where OpenAI omits a field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_INT64_MAX = (1 << 63) - 1
_MAX_STOP = 16
MAX_LOGIT_BIAS = 1024  # entries in one logit_bias map

Int64 = Annotated[int, Field(ge=-(1 << 63), le=_INT64_MAX)]
Priority = Annotated[int, Field(ge=-(1 << 31), le=(1 << 31) - 1)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopField = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=_MAX_STOP)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamOptions(_Request):
    include_usage: bool = False  # one final chunk with the whole answer's usage
    # vLLM's extension (with include_usage): every chunk also carries the usage so far, which
    # is how the gateway knows how many tokens reached the client if the stream is cut.
    continuous_usage_stats: bool = False


class _SamplingFields(_Request):
    """Fields both endpoints share (OpenAI's, plus vLLM/DeepSeek extras users rely on)."""

    # Undeclared fields land in model_extra for api_fields.FieldPolicy.check.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

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
    # OpenAI's: token id (as a JSON string key) -> bias; the ids are checked against the
    # vocabulary in sampling.py, where it is known.
    logit_bias: (
        Annotated[
            dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
            Field(max_length=MAX_LOGIT_BIAS),
        ]
        | None
    ) = None
    stream: bool = False
    stream_options: StreamOptions | None = None
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
    # Non-text parts (image_url...) are refused by type with a clear message, so their keys pass.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One conversation turn; extra keys (name, tool_calls...) reach the chat template."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    role: Annotated[str, Field(min_length=1, max_length=64)]
    content: str | list[ContentPart] | None = None
    prefix: bool = False  # DeepSeek chat prefix completion: continue this assistant message
    reasoning_content: str | None = None


class JsonSchemaFormat(_Request):
    """OpenAI's `response_format.json_schema`: a named schema the answer must validate against."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    # `schema` would shadow a BaseModel attribute: the field is schema_, spelled "schema" in JSON.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # enforced either way: decoding is constrained to the schema


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionDefinition(_Request):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema for the arguments object
    strict: bool | None = None  # forced calls are constrained to `parameters` either way


class ToolDefinition(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


class Thinking(_Request):
    """DeepSeek's `{"type": "enabled" | "disabled"}`: reasoning on or off (hybrid models)."""

    type: Literal["enabled", "disabled"]


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    add_generation_prompt: bool = True
    # vLLM's spelling of DeepSeek's `prefix: true` (the gateway's mid-stream continuation uses it).
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    thinking: Thinking | None = None  # DeepSeek's switch for hybrid reasoning models
    response_format: ResponseFormat | None = None  # JSON output, by constrained decoding
    tools: Annotated[list[ToolDefinition], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # None: true, as OpenAI


class CompletionRequest(_SamplingFields):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0, le=_INT64_MAX)]], Field(min_length=1)]
        | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]
    )
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None  # fill-in-the-middle: the text after the completion (fim.py)


class EmbeddingRequest(_Request):
    """POST /v1/embeddings (OpenAI's shape)."""

    # Undeclared fields land in model_extra for api_fields.FieldPolicy.check.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2048)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
        | Annotated[
            list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]],
            Field(min_length=1, max_length=2048),
        ]
    )
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None


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


class FunctionCall(BaseModel):
    name: str
    arguments: str  # a JSON object, as a string (OpenAI's shape)


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall


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
    tool_calls: list[DeltaToolCall] | None = None


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


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


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
