"""allocator: a 64 MiB block freed and allocated again on a worker thread is not re-faulted.

The settings are process-wide, so each case runs in a fresh interpreter. The block is allocated
on a non-main thread, like the engine's step buffers, because that is where glibc's per-thread
arenas would still mmap it. Page-fault counts, not timings, decide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

# Allocates, touches and frees a 64 MiB block 6 times on one thread; prints the minor page
# faults of the last 5 rounds (the first one may fault: the heap grows once).
_PROBE = r"""
import ctypes, resource, sys, threading
sys.path.insert(0, {src!r})
if {tune}:
    from localseek.server.allocator import keep_freed_memory, use_one_arena
    print("applied", use_one_arena() and keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
SIZE = 64 << 20
faults = []

def rounds():
    for i in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(SIZE)
        ctypes.memset(p, 1, SIZE)
        libc.free(p)
        if i:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

t = threading.Thread(target=rounds)
t.start()
t.join()
print("faults", sum(faults))
"""

_PAGES_PER_ROUND = (64 << 20) // 4096


def _faults(tune: bool) -> tuple[int, str]:
    code = _PROBE.format(src=SRC, tune=tune)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("faults "))
    return int(line.split()[1]), out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_step_buffers_are_reused_not_faulted_again():
    untuned, _ = _faults(tune=False)
    tuned, out = _faults(tune=True)
    assert "applied True" in out, out
    # Without the settings every round faults the whole block in again (5 rounds x 16,384
    # pages); with them the freed block is reused from the heap.
    assert untuned >= 4 * _PAGES_PER_ROUND, untuned
    assert tuned < _PAGES_PER_ROUND // 4, tuned
