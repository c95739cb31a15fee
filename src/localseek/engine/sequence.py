"""Sequence: one request's tokens, state and KV block table as the engine tracks it. No torch."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from localseek.sampling_params import SamplingParams

_arrival_counter = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # not started, or preempted (its KV dropped; recomputed on resume)
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """A request inside the engine.

    Tokens are `prompt_token_ids + output_token_ids`. `num_computed_tokens` counts the tokens
    whose KV is in the cache: a sequence is prefilling while it is below `num_prompt_tokens`
    and decoding after; there is no separate phase flag (vLLM v1's idea), so chunked prefill
    and mixed batches fall out of one rule: compute up to `num_tokens`.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    priority: int = 0  # lower runs first
    arrival_time: float = field(default_factory=time.monotonic)
    # Tie-breaker among equal priorities and arrival times: strictly increasing per process.
    arrival_order: int = field(default_factory=lambda: next(_arrival_counter))
    max_tokens: int = 16  # resolved limit (sampling max_tokens capped by the context)
    eos_token_ids: frozenset[int] = frozenset()

    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    # One block table per KV cache group (kv_layout.py); most models have one group.
    block_tables: list[list[int]] = field(default_factory=lambda: [[]])
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache (first schedule only)
    num_preemptions: int = 0
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or token that ended it
    # logprobs[i]: {token_id: logprob} for output token i (chosen token included), when asked.
    output_logprobs: list[dict[int, float]] = field(default_factory=list)
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    # The grammar's matcher state when sampling_params.grammar is set (engine/grammar.py),
    # made at the first sampled token and advanced by each one after.
    grammar_matcher: Any = None

    @property
    def block_table(self) -> list[int]:
        """The first group's table: the whole table of a single-group model."""
        return self.block_tables[0]

    @block_table.setter
    def block_table(self, table: list[int]) -> None:
        self.block_tables = [table]

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_at(self, index: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[index] if index < n else self.output_token_ids[index - n]

    def token_slice(self, start: int, end: int) -> list[int]:
        # Slice the two lists directly: building all_token_ids would cost O(context) per step.
        n = len(self.prompt_token_ids)
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def sort_key(self) -> tuple[int, float, int]:
        """Scheduling order: priority, then arrival."""
        return (self.priority, self.arrival_time, self.arrival_order)
