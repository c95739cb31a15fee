"""Engine: requests in, one scheduled forward pass per `step()`, outputs out. Single-threaded."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from localseek.config import EngineConfig
from localseek.engine.block_manager import BlockManager
from localseek.engine.detokenizer import IncrementalDetokenizer
from localseek.engine.grammar import GrammarMasks
from localseek.engine.model_loading import LoadedModel, load_model
from localseek.engine.outputs import EngineStats, RequestMetrics, RequestOutput
from localseek.engine.runner import ModelRunner
from localseek.engine.sampler import Sampler
from localseek.engine.scheduler import Scheduler, SchedulerOutput
from localseek.engine.sequence import Sequence, SequenceStatus
from localseek.errors import ContextLengthError, InvalidRequestError
from localseek.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

# Weight of the newest step in the decode-throughput moving average.
_EMA_ALPHA = 0.2


@dataclass
class _Tracked:
    """Engine-side bookkeeping of one request beside its Sequence."""

    seq: Sequence
    detok: IncrementalDetokenizer
    metrics: RequestMetrics
    num_reported_tokens: int = 0


class Engine:
    """Owns the model, the KV pool, the scheduler and the sampler; not thread-safe.

    `add_request` validates and queues; `step` runs one batch and returns an output for every
    request that produced a token or finished. AsyncEngine drives this from its own thread.
    """

    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        self.config = config
        loaded = loaded or load_model(config)
        self.tokenizer = loaded.tokenizer
        self.model_name = config.model.model
        self.max_model_len = loaded.max_model_len
        self.block_manager = BlockManager(
            loaded.num_kv_blocks,
            config.cache.block_size,
            config.cache.enable_prefix_caching,
            windows=loaded.kv_layout.windows,
            max_step_tokens=config.scheduler.max_num_batched_tokens,
        )
        self.scheduler = Scheduler(config.scheduler, self.block_manager, self.max_model_len)
        self.runner = ModelRunner(
            loaded.model,
            config.cache.block_size,
            loaded.num_kv_blocks,
            loaded.device,
            loaded.dtype,
            layout=loaded.kv_layout,
        )
        self.sampler = Sampler(GrammarMasks(self.tokenizer, loaded.vocab_size))
        self.vocab_size = loaded.vocab_size
        self._eos_ids = frozenset(self.tokenizer.eos_token_ids)
        self._requests: dict[str, _Tracked] = {}
        self._prompt_tokens_total = 0
        self._generation_tokens_total = 0
        self._steps_total = 0
        self._decode_rate = 0.0

    # ---- requests -------------------------------------------------------------------------

    def prepare(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        priority: int = 0,
    ) -> Sequence:
        """Tokenize and validate a request without touching engine state (safe from any thread)."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequestError("prompt must not be empty", param="prompt")
            token_ids = self.tokenizer.encode(prompt)
        else:
            token_ids = [int(t) for t in prompt]
        if not token_ids:
            raise InvalidRequestError("prompt must contain at least one token", param="prompt")
        bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidRequestError(
                f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})",
                param="prompt",
            )
        if params.n != 1:
            raise InvalidRequestError(
                f"the engine runs one sequence per request; got n={params.n} "
                "(submit n requests, as the server does)",
                param="n",
            )
        room = self.max_model_len - len(token_ids)
        if room <= 0:
            raise ContextLengthError(
                f"prompt has {len(token_ids)} tokens but the model's context is "
                f"{self.max_model_len} tokens; shorten the prompt",
                param="prompt",
            )
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        return Sequence(
            request_id=request_id,
            prompt_token_ids=token_ids,
            sampling_params=params,
            priority=priority,
            max_tokens=max_tokens,
            eos_token_ids=self._eos_ids,
        )

    def add_sequence(self, seq: Sequence) -> None:
        """Queue a prepared sequence; raises if it can never run (state unchanged)."""
        if seq.request_id in self._requests:
            raise InvalidRequestError(f"duplicate request id {seq.request_id!r}", param="id")
        self.scheduler.add(seq)
        self._prompt_tokens_total += seq.num_prompt_tokens
        detok = IncrementalDetokenizer(self.tokenizer, seq.sampling_params, seq.prompt_token_ids)
        metrics = RequestMetrics(arrival_time=seq.arrival_time)
        self._requests[seq.request_id] = _Tracked(seq, detok, metrics)

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        priority: int = 0,
    ) -> Sequence:
        seq = self.prepare(request_id, prompt, params, priority)
        self.add_sequence(seq)
        return seq

    def abort(self, request_ids: str | Iterable[str]) -> list[RequestOutput]:
        """Stop requests wherever they are; their blocks return to the pool at once."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        outputs = []
        for request_id in ids:
            tracked = self._requests.pop(request_id, None)
            if tracked is None:
                continue
            self.scheduler.abort(request_id)
            tracked.seq.status = SequenceStatus.FINISHED
            tracked.seq.finish_reason = "abort"
            outputs.append(self._output(tracked, finished=True))
        return outputs

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def unfinished_request_ids(self) -> list[str]:
        return list(self._requests)

    # ---- the step -------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once, sample, and report what changed."""
        out = self.scheduler.schedule()
        outputs = [self._finished_by_scheduler(seq) for seq in out.finished]
        if not out.scheduled:
            return outputs
        started = time.monotonic()
        logits = self.runner.execute(out.scheduled)
        self.scheduler.on_step_done(out)
        ready = self._sequences_to_sample(out)
        if ready:
            sampled = self.sampler(logits, ready)
            now = time.monotonic()
            for seq, token_id, logprobs in zip(ready, sampled.token_ids, sampled.logprobs):
                tracked = self._requests[seq.request_id]
                self._append_token(tracked, token_id, logprobs, now)
                outputs.append(self._output(tracked, finished=seq.is_finished))
                if seq.is_finished:
                    del self._requests[seq.request_id]
        self._account(out, len(ready), time.monotonic() - started)
        return outputs

    def _finished_by_scheduler(self, seq: Sequence) -> RequestOutput:
        # "length": the sequence's context outgrew the whole KV pool (see scheduler.py).
        tracked = self._requests.pop(seq.request_id)
        tracked.metrics.finished_time = time.monotonic()
        return self._output(tracked, finished=True)

    def _sequences_to_sample(self, out: SchedulerOutput) -> list[Sequence]:
        # After on_step_done, a sequence whose computed tokens caught up with its length has
        # fresh logits for its next token; prefill chunks that did not reach the end do not.
        ready = []
        for item in out.scheduled:
            seq = item.seq
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = time.monotonic()
            tracked = self._requests.get(seq.request_id)
            if tracked is not None and tracked.metrics.first_scheduled_time is None:
                tracked.metrics.first_scheduled_time = seq.first_scheduled_time
            if seq.num_computed_tokens == seq.num_tokens:
                ready.append(seq)
        return ready

    def _append_token(
        self, tracked: _Tracked, token_id: int, logprobs: dict[int, float] | None, now: float
    ) -> None:
        seq = tracked.seq
        seq.output_token_ids.append(token_id)
        if logprobs is not None:
            seq.output_logprobs.append(logprobs)
        if tracked.metrics.first_token_time is None:
            tracked.metrics.first_token_time = now
            seq.first_token_time = now
        reason, stop = self._stop_check(tracked, token_id)
        if reason is not None:
            seq.stop_reason = stop
            tracked.metrics.finished_time = now
            self.scheduler.finish(seq, reason)
            seq.finish_reason = reason

    def _stop_check(self, tracked: _Tracked, token_id: int) -> tuple[str | None, str | int | None]:
        seq = tracked.seq
        params = seq.sampling_params
        past_min = seq.num_output_tokens > params.min_tokens
        if past_min and token_id in params.stop_token_ids:
            return "stop", token_id
        if past_min and not params.ignore_eos and token_id in self._eos_ids:
            return "stop", None
        is_special = token_id in self._eos_ids or token_id in params.stop_token_ids
        if not is_special:
            matched = tracked.detok.add(token_id)
            if matched is not None and past_min:
                return "stop", matched
        if (
            seq.num_output_tokens >= seq.max_tokens
            or seq.num_tokens >= self.max_model_len
            or not self.block_manager.can_ever_fit(seq.num_tokens)
        ):
            return "length", None
        return None, None

    def _output(self, tracked: _Tracked, *, finished: bool) -> RequestOutput:
        seq = tracked.seq
        delta_text = tracked.detok.finish() if finished else tracked.detok.new_text()
        start = tracked.num_reported_tokens
        tracked.num_reported_tokens = seq.num_output_tokens
        wants_logprobs = seq.sampling_params.logprobs is not None
        return RequestOutput(
            request_id=seq.request_id,
            prompt_token_ids=seq.prompt_token_ids,
            num_cached_tokens=seq.num_cached_tokens,
            text=tracked.detok.text,
            token_ids=list(seq.output_token_ids),
            delta_text=delta_text,
            delta_token_ids=seq.output_token_ids[start:],
            delta_logprobs=seq.output_logprobs[start:] if wants_logprobs else None,
            finished=finished,
            finish_reason=seq.finish_reason if finished else None,
            metrics=tracked.metrics,
            stop_reason=seq.stop_reason,
            logprobs=list(seq.output_logprobs) if wants_logprobs else None,
        )

    # ---- stats ----------------------------------------------------------------------------

    def _account(self, out: SchedulerOutput, num_sampled: int, seconds: float) -> None:
        self._steps_total += 1
        self._generation_tokens_total += num_sampled
        if seconds > 0 and num_sampled:
            rate = num_sampled / seconds
            self._decode_rate = (
                rate
                if self._decode_rate == 0
                else (1 - _EMA_ALPHA) * self._decode_rate + _EMA_ALPHA * rate
            )

    def stats(self) -> EngineStats:
        waiting = self.scheduler.waiting_sequences()
        running = self.scheduler.running_sequences()
        bm = self.block_manager
        return EngineStats(
            num_running=len(running),
            num_waiting=len(waiting),
            waiting_tokens=sum(s.num_prompt_tokens + s.max_tokens for s in waiting),
            running_tokens_left=sum(max(0, s.max_tokens - s.num_output_tokens) for s in running),
            kv_usage=bm.usage(),
            num_kv_blocks=bm.num_total_blocks,
            block_size=bm.block_size,
            prefix_cache_queries=bm.prefix_queries,
            prefix_cache_hits=bm.prefix_hits,
            prompt_tokens_total=self._prompt_tokens_total,
            generation_tokens_total=self._generation_tokens_total,
            num_preemptions_total=self.scheduler.num_preemptions_total,
            generation_tokens_per_s=self._decode_rate,
            max_num_seqs=self.config.scheduler.max_num_seqs,
            steps_total=self._steps_total,
        )
