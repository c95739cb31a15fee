"""CPU thread policy for the serving process: how torch's OpenMP threads wait between operations.

An engine step on the CPU runs hundreds of parallel regions (one per matmul, attention, ...),
separated by microseconds of Python. Between regions each worker thread either spins or sleeps:

- libgomp's default spins ~300,000 iterations, so the workers hold every core through each step
  and for a while after it: in an earlier version the HTTP event loop starved (2 cores: 8
  concurrent streams of 32 tokens took 3-5 s instead of 0.3-0.6 s). With today's engine a
  longer spin (100,000) measured within noise of the bounded one below, so the shorter stays.
- OMP_WAIT_POLICY=PASSIVE (what `serve` set before) sleeps at once, so every region starts with
  a futex wake-up of each worker, which in this VM costs tens of microseconds: the demo model's
  int8 decode step took 37 ms at batch 1 and 113 ms at batch 16 instead of 22 and 62 ms.
- A bounded spin (GOMP_SPINCOUNT=20000, a few tens of microseconds) keeps workers awake from
  one region to the next inside a step, then lets them sleep and leave the cores to the event
  loop. Measured through `localseek serve --quantization int8`, same run, 2 cores:
  1 / 8 / 16 / 64 streams 28 / 99 / 158 / 164 tokens/s passive against 32 / 123 / 203 / 304.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = "20000"


def bound_thread_spinning(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set GOMP_SPINCOUNT for libgomp unless the user chose a wait policy or spin count.

    Must run before torch is imported: the OpenMP runtime reads its environment once, at load.
    Other OpenMP runtimes ignore the variable.
    """
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def threads_leave_cores_idle(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether idle OpenMP threads give their cores back soon enough to use every core."""
    policy = environ.get("OMP_WAIT_POLICY", "").strip().upper()
    return policy == "PASSIVE" or (policy != "ACTIVE" and "GOMP_SPINCOUNT" in environ)
