"""What the engine hands back: per-request outputs (cumulative and delta) and engine stats."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestMetrics:
    """Monotonic timestamps (time.monotonic) of one request's life."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None


@dataclass
class RequestOutput:
    """One request's state after a step: cumulative text/tokens and what is new since last time."""

    request_id: str
    prompt_token_ids: list[int]
    num_cached_tokens: int  # prompt tokens served from the prefix cache
    text: str
    token_ids: list[int]
    delta_text: str
    delta_token_ids: list[int]
    delta_logprobs: list[dict[int, float]] | None
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort"
    metrics: RequestMetrics
    stop_reason: str | int | None = None
    logprobs: list[dict[int, float]] | None = field(default=None)  # cumulative, when asked

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine, taken after every step (read by the server and /load)."""

    num_running: int
    num_waiting: int
    waiting_tokens: int  # prompt + max_tokens of waiting requests
    running_tokens_left: int  # max_tokens still to generate by running requests (upper bound)
    kv_usage: float  # fraction of KV blocks held by live sequences
    num_kv_blocks: int
    block_size: int
    prefix_cache_queries: int  # prompt tokens looked up, cumulative
    prefix_cache_hits: int  # prompt tokens found, cumulative
    prompt_tokens_total: int
    generation_tokens_total: int
    num_preemptions_total: int
    generation_tokens_per_s: float  # recent decode throughput (EMA); 0.0 when unknown
    max_num_seqs: int
    steps_total: int
