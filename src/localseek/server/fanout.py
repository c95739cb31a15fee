"""FanOut: one client request as several engine requests (n choices, batch prompts), merged.

Each choice is its own engine request, so n=4 with a seed runs seeds s, s+1, s+2, s+3 and
every choice is reproducible on its own. Closing the FanOut (client gone, error, done) cancels
every engine stream, which aborts those requests in the engine and frees their KV blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from localseek.engine.outputs import RequestOutput
from localseek.ops.metrics.server import ServerMetrics
from localseek.sampling_params import SamplingParams


class GeneratingEngine(Protocol):
    def generate(
        self, prompt: list[int], params: SamplingParams, *, request_id: str, priority: int = 0
    ) -> AsyncIterator[RequestOutput]: ...


@dataclass(frozen=True)
class Job:
    """One engine request: a choice of a client request."""

    index: int  # the choice index the client sees
    prompt: list[int]
    params: SamplingParams
    max_tokens: int  # resolved output limit (the declared cost is prompt + this)

    @property
    def indices(self) -> list[int]:
        return [job.index for job in self._jobs]

    @property
    def cost(self) -> int:
        return len(self.prompt) + self.max_tokens


_END = object()


class FanOut:
    """Runs jobs concurrently and yields (index, output) as outputs arrive, in arrival order."""

    def __init__(
        self,
        engine: GeneratingEngine,
        jobs: list[Job],
        *,
        request_id: str,
        priority: int,
        metrics: ServerMetrics | None = None,
        arrival: float | None = None,
    ):
        self._engine = engine
        self._jobs = jobs
        self._request_id = request_id
        self._priority = priority
        self._metrics = metrics
        # When the server received the request (monotonic): latencies include the time spent
        # in the admission queue, which the engine never sees.
        self._arrival = arrival
        self._tasks: list[asyncio.Task] = []
        self._generated = {job.index: 0 for job in jobs}
        self._finished: set[int] = set()

    @property
    def indices(self) -> list[int]:
        return [job.index for job in self._jobs]

    @property
    def cost(self) -> int:
        """Declared cost: prompt plus max output tokens of every job."""
        return sum(job.cost for job in self._jobs)

    def cost_done(self) -> int:
        """Work actually spent: declared cost for finished jobs, work so far for cut ones."""
        total = 0
        for job in self._jobs:
            if job.index in self._finished:
                total += job.cost
            else:
                total += len(job.prompt) + self._generated[job.index]
        return total

    async def stream(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        queue: asyncio.Queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._pump(job, queue)) for job in self._jobs]
        remaining = len(self._jobs)
        try:
            while remaining:
                item = await queue.get()
                if item is _END:
                    remaining -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await self.close()

    async def collect(self) -> dict[int, RequestOutput]:
        """The final output of every job, by index."""
        finals: dict[int, RequestOutput] = {}
        async for index, out in self.stream():
            if out.finished:
                finals[index] = out
        return finals

    async def close(self) -> None:
        """Cancel every job still running (each aborts its engine request)."""
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            # Shielded so a cancelled caller still waits for the aborts to be issued.
            await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))

    async def _pump(self, job: Job, queue: asyncio.Queue) -> None:
        engine_id = f"{self._request_id}-{job.index}"
        try:
            stream = self._engine.generate(
                job.prompt, job.params, request_id=engine_id, priority=self._priority
            )
            async for out in stream:
                self._generated[job.index] = len(out.token_ids)
                if out.finished:
                    self._finished.add(job.index)
                    self._observe(out)
                queue.put_nowait((job.index, out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which raises it in its own task
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_END)

    def _observe(self, out: RequestOutput) -> None:
        if self._metrics is None:
            return
        m = out.metrics
        self._metrics.observe_request(
            arrival=m.arrival_time if self._arrival is None else self._arrival,
            first_scheduled=m.first_scheduled_time,
            first_token=m.first_token_time,
            finished=m.finished_time if m.finished_time is not None else time.monotonic(),
            num_output_tokens=len(out.token_ids),
            finish_reason=out.finish_reason,
        )
