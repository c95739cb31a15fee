"""Compile a kernel's C source once per machine and variant, and load it with ctypes.

The sources are small, plain C with SIMD intrinsics and OpenMP: a compiler builds one in
well under a second, so there is no build step at install time. Each kernel lists the
instruction-set variants it compiles for (variants.py); the best one this CPU's own flags
allow is loaded. The shared object is cached under `$LOCALSEEK_CACHE_DIR` (default
`~/.cache/localseek`) by a hash of the source, the package's headers, flags and compiler,
written atomically, so concurrent processes and upgrades are safe. Its OpenMP runtime is
torch's own: the object asks for libgomp.so.1 by SONAME, which torch has already loaded, so
both share one thread pool and torch's thread count.

Anything missing (no compiler, no variant this CPU can run, a failed build,
LOCALSEEK_NATIVE_KERNELS=0) returns None with the reason logged once; callers then use their
torch implementation.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import torch

from localseek.kernels.cpu_features import cpu_flags, describe
from localseek.kernels.variants import Variant, best_variant, variants_of

logger = logging.getLogger(__name__)

# The element-type argument the kernels take (see bf16.h).
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}

BASE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)


def cache_dir() -> Path:
    root = os.environ.get("LOCALSEEK_CACHE_DIR")
    if root:
        return Path(root) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "localseek" / "kernels"


def unavailable_reason(kernel: str | None = None) -> str | None:
    """Why native kernels (or this one) cannot run in this process, or None when they can."""
    if os.environ.get("LOCALSEEK_NATIVE_KERNELS", "1").strip() in ("0", "false", "no"):
        return "disabled by LOCALSEEK_NATIVE_KERNELS"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"only built for Linux x86-64, this is {platform.system()} {platform.machine()}"
    if _compiler() is None:
        return "no C compiler (set CC, or install gcc)"
    if kernel is not None and best_variant(kernel) is None:
        names = ", ".join(v.name for v in variants_of(kernel))
        return f"this CPU ({describe()}) runs none of its variants ({names})"
    return None


def runnable_variants(kernel: str) -> list[Variant]:
    """The kernel's variants this CPU can execute (tests run each of them)."""
    return [v for v in variants_of(kernel) if v.runs_on(cpu_flags())]


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@functools.cache
def load(name: str, variant: str | None = None) -> ctypes.CDLL | None:
    """The compiled kernels/`name`.c for `variant` (default: the best this CPU runs), or None
    (reason logged) when it cannot be had. A named variant the CPU cannot run is refused."""
    reason = unavailable_reason(name)
    chosen = best_variant(name)
    if reason is None and variant is not None:
        chosen = next((v for v in variants_of(name) if v.name == variant), None)
        if chosen is None or not chosen.runs_on(cpu_flags()):
            reason = f"variant {variant!r} does not run on this CPU ({describe()})"
    if reason is None:
        try:
            return ctypes.CDLL(str(compile_variant(name, chosen)))
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"building it failed: {exc}"
    logger.info("native kernel %s not used (%s); using the torch implementation", name, reason)
    return None


def loaded_variant(name: str) -> str | None:
    """The variant `load(name)` chose, or None when the kernel is not in use."""
    return None if load(name) is None else best_variant(name).name


def bind(
    name: str, symbol: str, argtypes: list, variant: str | None = None
) -> ctypes._CFuncPtr | None:
    """Kernel file `name`'s C function `symbol`, typed (every kernel returns an int status),
    or None when the kernel cannot be had (see load)."""
    lib = load(name, variant)
    if lib is None:
        return None
    fn = getattr(lib, symbol)
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def compile_variant(name: str, variant: Variant) -> Path:
    """Build (or find in the cache) kernels/`name`.c for `variant`; compiling needs no CPU
    support for the variant, so every variant is compiled in tests on every host."""
    package = resources.files("localseek.kernels")
    source = package.joinpath(f"{name}.c").read_bytes()
    headers = {e.name: e.read_bytes() for e in package.iterdir() if e.name.endswith(".h")}
    compiler = _compiler()
    if compiler is None:
        raise subprocess.SubprocessError("no C compiler (set CC, or install gcc)")
    flags = (*BASE_FLAGS, *variant.flags)
    parts = [source, *(headers[h] for h in sorted(headers)), " ".join(flags).encode()]
    key = hashlib.sha256(b"\0".join([*parts, compiler.encode()]))
    target = cache_dir() / f"{name}-{variant.name}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / f"{name}.c"
        src.write_bytes(source)
        for header, text in headers.items():  # included as "name.h", next to the source
            (Path(tmp) / header).write_bytes(text)
        built = Path(tmp) / target.name
        cmd = [compiler, *flags, str(src), "-o", str(built), *LIBS]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise subprocess.SubprocessError(result.stderr.strip()[-2000:])
        os.replace(built, target)  # atomic: a concurrent build of the same key wins harmlessly
    logger.info("built native kernel %s (%s) -> %s", name, variant.name, target)
    return target
