"""Continuous batching: waiting/running queues, token budget, chunked prefill, preemption. No torch.

There is no prefill or decode phase. Each step, every scheduled sequence computes tokens
`[num_computed_tokens, num_computed_tokens + num_new_tokens)`; a prompt is a sequence far
behind its length, a decode is one token behind. One step therefore mixes decodes, prompt
chunks and newly admitted prompts under one token budget.

Order of a step (also the order the runner lays tokens out):
1. Running sequences, best sort key first (priority, then arrival). Each takes what it still
   needs (a decode: 1 token; a started prompt: the rest), cut to the budget left. When the
   pool has no block for it, the worst running sequence not yet scheduled is preempted by
   recompute (blocks freed, `num_computed_tokens = 0`, back to the waiting queue in its sort
   position); if the sequence itself is the worst left, it preempts itself.
2. Waiting sequences, best sort key first, while the budget, `max_num_seqs` and the pool allow.
   Skipped entirely in a step that had to preempt for running ones (the pool is short; admitting
   would only thrash). A waiting sequence that finds no blocks may preempt a running one of
   strictly lower priority (a higher number); otherwise admission stops there, so a big
   request at the head is not starved by smaller ones behind it.

Never deadlocks: a sequence is only scheduled while `block_manager.can_ever_fit(num_tokens)`,
so alone in the pool it always fits; one that has outgrown the whole pool (its context needs
more blocks than exist) is finished by the scheduler with reason "length" and returned in
`SchedulerOutput.finished` for the engine to report.

`enable_chunked_prefill` decides admission only: when on, a waiting sequence larger than the
budget left starts with a chunk; when off, it waits for a step with room for all of it, except
one larger than the whole budget, which is chunked anyway (it could never run otherwise).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from localseek.config import SchedulerConfig
from localseek.engine.block_manager import BlockManager
from localseek.engine.sequence import Sequence, SequenceStatus
from localseek.errors import ContextLengthError, InvalidRequestError


@dataclass(frozen=True)
class ScheduledSeq:
    """One sequence's share of a step: tokens [num_computed_tokens, + num_new_tokens)."""

    seq: Sequence
    num_new_tokens: int


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)  # sent back to waiting this step
    num_batched_tokens: int = 0
    # Finished by the scheduler ("length": context outgrew the whole KV pool); already freed.
    finished: list[Sequence] = field(default_factory=list)


class _Step:
    """Mutable state of one `schedule()` call."""

    def __init__(self, budget: int):
        self.budget = budget
        self.out = SchedulerOutput()
        self.scheduled_ids: set[str] = set()

    def add(self, seq: Sequence, num_new: int) -> None:
        self.out.scheduled.append(ScheduledSeq(seq, num_new))
        self.scheduled_ids.add(seq.request_id)
        self.budget -= num_new

    def drop(self, seq: Sequence) -> None:
        """Undo `add` for a sequence preempted later in the same step."""
        if seq.request_id in self.scheduled_ids:
            self.scheduled_ids.discard(seq.request_id)
            index = next(i for i, s in enumerate(self.out.scheduled) if s.seq is seq)
            item = self.out.scheduled.pop(index)
            self.budget += item.num_new_tokens


class Scheduler:
    """Decides, each step, which sequences compute how many tokens."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager, max_model_len: int):
        self.config = config
        self.block_manager = block_manager
        self.max_model_len = max_model_len
        self._waiting: list[Sequence] = []  # sorted by sort_key
        self._running: list[Sequence] = []  # sorted by sort_key
        self._by_id: dict[str, Sequence] = {}
        self.num_preemptions_total = 0

    # ---- queue views ------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def running_sequences(self) -> list[Sequence]:
        return list(self._running)

    def waiting_sequences(self) -> list[Sequence]:
        return list(self._waiting)

    def has_unfinished(self) -> bool:
        return bool(self._by_id)

    def get(self, request_id: str) -> Sequence | None:
        return self._by_id.get(request_id)

    # ---- requests in and out ----------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence; refuses (state unchanged) one that could never run."""
        n = seq.num_prompt_tokens
        if n >= self.max_model_len:
            raise ContextLengthError(
                f"prompt has {n} tokens but the model's context is {self.max_model_len} tokens "
                "(room is needed for at least one output token); shorten the prompt",
                param="prompt",
            )
        bm = self.block_manager
        if not bm.can_ever_fit(n + 1):
            raise ContextLengthError(
                f"prompt has {n} tokens but the whole KV cache holds {bm.capacity_tokens} tokens "
                f"({bm.num_total_blocks} blocks of {bm.block_size}); shorten the prompt or "
                "give the KV cache more memory",
                param="prompt",
            )
        if seq.request_id in self._by_id:
            raise InvalidRequestError(f"duplicate request id {seq.request_id!r}", param="id")
        assert not any(seq.block_tables) and seq.num_computed_tokens == 0, seq.request_id
        seq.status = SequenceStatus.WAITING
        self._by_id[seq.request_id] = seq
        bisect.insort(self._waiting, seq, key=_sort_key)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark finished, free its blocks (prefix stays cached) and drop it from the queues."""
        self._remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def abort(self, request_id: str) -> Sequence | None:
        """Stop a request wherever it is; None if unknown or already finished."""
        seq = self._by_id.get(request_id)
        if seq is not None:
            self.finish(seq, "abort")
        return seq

    def _remove(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        self._by_id.pop(seq.request_id, None)
        for queue in (self._running, self._waiting):
            _remove_identical(queue, seq)

    # ---- the step ---------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Choose this step's work; an empty `scheduled` list means nothing to do."""
        step = _Step(self.config.max_num_batched_tokens)
        self._schedule_running(step)
        if not step.out.preempted:
            self._schedule_waiting(step)
        step.out.num_batched_tokens = sum(s.num_new_tokens for s in step.out.scheduled)
        return step.out

    def on_step_done(self, out: SchedulerOutput) -> None:
        """Account the computed tokens and publish newly full blocks to the prefix cache."""
        for item in out.scheduled:
            seq = item.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue  # aborted after scheduling: its blocks are already back in the pool
            seq.num_computed_tokens += item.num_new_tokens
            assert seq.num_computed_tokens <= seq.num_tokens, seq.request_id
            self.block_manager.commit(seq)

    def _schedule_running(self, step: _Step) -> None:
        for seq in list(self._running):
            if step.budget == 0:
                return
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            if self._finish_if_outgrown(seq, step):
                continue
            # A started sequence continues in chunks whatever the setting: it is already split.
            num_new = min(seq.num_tokens - seq.num_computed_tokens, step.budget)
            if self._allocate_running(seq, num_new, step):
                step.add(seq, num_new)

    def _allocate_running(self, seq: Sequence, num_new: int, step: _Step) -> bool:
        """Blocks for a running sequence, preempting worse unscheduled ones; False if none."""
        while not self.block_manager.allocate(seq, num_new):
            victim = self._worst_running(exclude=step.scheduled_ids)
            self._preempt(victim, step)
            if victim is seq:
                return False
        return True

    def _schedule_waiting(self, step: _Step) -> None:
        while self._waiting and step.budget > 0:
            if len(self._running) >= self.config.max_num_seqs:
                return
            seq = self._waiting[0]
            if any(p is seq for p in step.out.preempted):
                return  # sent back this step; everything behind it sorts after it too
            if self._finish_if_outgrown(seq, step):
                continue
            hit = self.block_manager.lookup_prefix(seq)
            num_new = self._chunk(seq.num_tokens - hit, step.budget)
            if num_new == 0 or not self._allocate_waiting(seq, num_new, step):
                return
            self._waiting.pop(0)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self._running, seq, key=_sort_key)
            step.add(seq, num_new)

    def _allocate_waiting(self, seq: Sequence, num_new: int, step: _Step) -> bool:
        """Blocks for admission, preempting running sequences of strictly lower priority."""
        while not self.block_manager.allocate(seq, num_new):
            victim = self._worst_running(exclude=set())
            if victim is None or victim.priority <= seq.priority:
                return False
            self._preempt(victim, step)
        return True

    def _chunk(self, remaining: int, budget: int) -> int:
        """Tokens a waiting sequence computes in its first step, given the budget left."""
        if remaining <= budget:
            return remaining
        # Chunk when allowed, or when the sequence exceeds even a whole step's budget (it could
        # never run otherwise); else it waits for a step with room for all of it.
        whole_budget = self.config.max_num_batched_tokens
        if self.config.enable_chunked_prefill or remaining > whole_budget:
            return budget
        return 0

    def _worst_running(self, exclude: set[str]) -> Sequence | None:
        """Lowest-priority running sequence (highest sort key) not in `exclude`."""
        for seq in reversed(self._running):
            if seq.request_id not in exclude:
                return seq
        return None

    def _preempt(self, seq: Sequence, step: _Step) -> None:
        """Recompute preemption: drop its KV; it resumes from scratch, keeping its outputs."""
        step.drop(seq)
        self.block_manager.free(seq)
        _remove_identical(self._running, seq)
        seq.status = SequenceStatus.WAITING
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions_total += 1
        bisect.insort(self._waiting, seq, key=_sort_key)
        step.out.preempted.append(seq)

    def _finish_if_outgrown(self, seq: Sequence, step: _Step) -> bool:
        """Finish with "length" a sequence whose context no longer fits the whole pool."""
        if self.block_manager.can_ever_fit(seq.num_tokens):
            return False
        self.finish(seq, "length")
        step.out.finished.append(seq)
        return True


def _sort_key(seq: Sequence) -> tuple[int, float, int]:
    return seq.sort_key


def _remove_identical(queue: list[Sequence], seq: Sequence) -> None:
    # By identity: Sequence is a dataclass whose == compares every field.
    for i, other in enumerate(queue):
        if other is seq:
            del queue[i]
            return
