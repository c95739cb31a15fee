"""`localseek serve --profile N`: the PyTorch profiler over N engine steps, into a trace file.

The trace is Chrome-trace JSON named `*.pt.trace.json`: Perfetto (ui.perfetto.dev) and
chrome://tracing open it directly, and TensorBoard's profiler plugin finds it in --logdir.
The profiler starts at the first step with work and stops after the N-th, on the engine
thread, so it sees exactly the steps' operators; the top operators by self CPU time (and CUDA
time on a GPU) are printed when it stops.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

from localseek.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ProfileConfig:
    steps: int  # engine steps to record
    out_dir: str = "."  # where the trace file goes
    top_ops: int = 20  # rows of the printed operator table

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--profile must be >= 1 steps, got {self.steps}")


class StepProfiler:
    """Wraps engine steps; after `config.steps` of them the trace is written and profiling ends."""

    def __init__(self, config: ProfileConfig, report: Callable[[str], None] | None = None):
        self.config = config
        self._report = report or _print
        self._prof: profile | None = None
        self._steps = 0
        self.trace_path: Path | None = None
        self.table: str | None = None  # the top-operators table, once done

    @property
    def done(self) -> bool:
        return self._steps >= self.config.steps

    def step(self, run: Callable[[], T]) -> T:
        if self.done:
            return run()
        if self._prof is None:
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self._prof = profile(activities=activities, record_shapes=True)
            self._prof.__enter__()
        try:
            return run()
        finally:
            self._steps += 1
            if self.done:
                self._finish()

    def _finish(self) -> None:
        prof = self._prof
        assert prof is not None
        prof.__exit__(None, None, None)
        out = Path(self.config.out_dir)
        name = f"localseek_{socket.gethostname()}_{os.getpid()}.{int(time.time() * 1000)}"
        path = out / f"{name}.pt.trace.json"
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        self.table = prof.key_averages().table(sort_by=sort, row_limit=self.config.top_ops)
        try:
            out.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(path))
            self.trace_path = path
        except OSError as exc:  # profiling must never take the engine down
            logger.error("could not write the profiler trace to %s: %s", path, exc)
        where = self.trace_path or "(not written)"
        self._report(
            f"profile of {self._steps} engine steps: {where}\n"
            "open it in https://ui.perfetto.dev or TensorBoard (--logdir the folder)\n"
            f"{self.table}"
        )


def _print(text: str) -> None:
    print(text, flush=True)  # stdout may be a file: show it now, not at exit
