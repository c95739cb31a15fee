"""What this CPU can execute, read from the CPU's own flags (never from torch's capability or
an environment override, which can name AVX-512 on a CPU that lacks it and end in SIGILL)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The flags the kernels' variants are built for (Linux /proc/cpuinfo names).
KNOWN_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The flags of the first processor listed in /proc/cpuinfo's text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This CPU's feature flags; empty where they cannot be read (then only portable code runs)."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        return frozenset()


def describe(flags: frozenset[str] | None = None) -> str:
    """The kernel-relevant flags, e.g. 'avx2 fma f16c' — for logs and benchmark records."""
    flags = cpu_flags() if flags is None else flags
    present = [f for f in KNOWN_FLAGS if f in flags]
    return " ".join(present) or "none of " + ", ".join(KNOWN_FLAGS)
