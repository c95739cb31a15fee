"""AsyncEngine: the Engine on its own thread, with an asyncio stream per request.

The event loop never runs a forward pass: requests are validated on a worker thread, handed
to the engine thread through a queue, and outputs come back with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localseek.config import EngineConfig
from localseek.engine.engine import Engine
from localseek.engine.outputs import EngineStats, RequestOutput
from localseek.engine.sequence import Sequence
from localseek.errors import LocalseekError, ServiceUnavailableError
from localseek.sampling_params import SamplingParams

if TYPE_CHECKING:
    from localseek.engine.step_profiler import StepProfiler

logger = logging.getLogger(__name__)

# After waking from idle: gather requests until none has come for BURST_QUIET_S, for at most
# BURST_MAX_S (a lone request waits BURST_QUIET_S longer for its first step).
BURST_QUIET_S = 0.003
BURST_MAX_S = 0.025


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # RequestOutput | BaseException


class AsyncEngine:
    """Thread-owned Engine with `async generate(...)` streams."""

    def __init__(
        self,
        engine: Engine,
        *,
        burst_quiet_s: float = BURST_QUIET_S,
        burst_max_s: float = BURST_MAX_S,
        profiler: StepProfiler | None = None,
    ):
        self.engine = engine
        self._profiler = profiler  # `serve --profile N`: records the first N steps
        self._burst_quiet_s, self._burst_max_s = burst_quiet_s, burst_max_s
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.model_name = engine.model_name
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()  # guards _streams
        self._stats = engine.stats()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="localseek-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(
        cls, config: EngineConfig, *, profiler: StepProfiler | None = None
    ) -> AsyncEngine:
        return cls(Engine(config), profiler=profiler)

    # ---- public ---------------------------------------------------------------------------

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def stats(self) -> EngineStats:
        return self._stats

    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        request_id: str,
        priority: int = 0,
    ) -> AsyncIterator[RequestOutput]:
        """Stream outputs for one request; leaving the iteration early aborts it."""
        if not self.is_alive():
            raise ServiceUnavailableError("the engine is not running")
        seq = await asyncio.to_thread(self.engine.prepare, request_id, prompt, params, priority)
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self._streams[request_id] = stream
        self._commands.put(("add", seq))
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not finished:
                self._commands.put(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def shutdown(self) -> None:
        self._stopping.set()
        self._commands.put(("wake", None))
        self._thread.join(timeout=10)

    # ---- engine thread --------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._drain_commands(block=not self.engine.has_unfinished())
                if self._stopping.is_set():
                    break
                if self.engine.has_unfinished():
                    self._step()
        except BaseException as exc:  # the loop must report, not vanish silently
            logger.exception("engine loop crashed")
            self._error = exc
            self._stopping.set()
            with self._lock:
                streams = list(self._streams.items())
            for request_id, _ in streams:
                self._deliver(request_id, ServiceUnavailableError(f"engine loop crashed: {exc}"))

    def _step(self) -> None:
        try:
            if self._profiler is not None:
                outputs = self._profiler.step(self.engine.step)
            else:
                outputs = self.engine.step()
        except Exception as exc:
            # A failing batch must not take the server down: fail the requests in flight,
            # free their blocks, and keep serving new ones.
            logger.exception("engine step failed; failing the requests in flight")
            with self._lock:
                ids = list(self._streams)
            self.engine.abort(self.engine.unfinished_request_ids())
            for request_id in ids:
                self._deliver(request_id, ServiceUnavailableError(f"engine step failed: {exc}"))
            outputs = []
        self._stats = self.engine.stats()
        for out in outputs:
            self._deliver(out.request_id, out)

    def _drain_commands(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=0.5) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        # Waking from idle, a burst of requests is still arriving through the HTTP layer: wait
        # for it to go quiet (briefly) so that it is prefilled in one step. Starting on the
        # first request instead made the rest arrive during a CPU-bound prefill, whose threads
        # then competed with the event loop admitting them: 16 simultaneous requests to the
        # demo were prefilled in two steps, first tokens ~0.1 s later than all in one.
        deadline = time.monotonic() + self._burst_max_s if block else 0.0
        while True:
            self._apply(command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                wait = min(self._burst_quiet_s, deadline - time.monotonic())
                if wait <= 0:
                    return
                try:
                    command = self._commands.get(timeout=wait)
                except queue.Empty:
                    return

    def _apply(self, command: tuple) -> None:
        kind, arg = command
        if kind == "add":
            seq: Sequence = arg
            with self._lock:
                alive = seq.request_id in self._streams
            if not alive:
                return  # the client left before the engine saw the request
            try:
                self.engine.add_sequence(seq)
            except LocalseekError as exc:
                self._deliver(seq.request_id, exc)
            self._stats = self.engine.stats()
        elif kind == "abort":
            for out in self.engine.abort(arg):
                self._deliver(out.request_id, out)
            self._stats = self.engine.stats()

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        with self._lock:
            stream = self._streams.get(request_id)
        if stream is None:
            return
        try:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
        except RuntimeError:
            pass  # the client's loop is closed; nothing to deliver to
