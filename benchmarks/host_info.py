"""What a benchmark run ran on: the CPU's model and SIMD flags, the commit, a binary's version."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

# The flags that decide which kernels can run (issue 12): AVX2 everywhere we care about,
# AVX-512 and its bf16 / VNNI extensions on newer servers, AVX-VNNI on newer desktops.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """Model name, logical cores and which of KERNEL_FLAGS the CPU reports."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass  # not Linux: the flags stay unknown, the run still happens
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "flags": [flag for flag in KERNEL_FLAGS if flag in flags],
    }


def repo_commit(root: Path) -> str:
    """`git describe`-like short commit of the checkout, with -dirty for uncommitted changes."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def binary_version(argv: list[str]) -> str:
    """The first lines a binary prints for `--version` (llama.cpp prints to stderr)."""
    try:
        out = subprocess.run(argv + ["--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return "; ".join(line.strip() for line in lines[:2]) or "unknown"
