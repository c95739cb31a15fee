"""The instruction set a compiled kernel object says it was built for (its C `_isa` function)."""

from __future__ import annotations

import ctypes

from localseek.kernels.build import load


def compiled_isa(kernel: str, variant: str | None = None) -> str:
    """`localseek_<kernel>_isa()` of the object `load(kernel, variant)` returns: the variant's
    name as the compiler's macros saw it, so a caller can tell which code it really runs.
    The kernel must have loaded (callers check `bind` first)."""
    fn = getattr(load(kernel, variant), f"localseek_{kernel}_isa")
    fn.argtypes = []
    fn.restype = ctypes.c_char_p
    return fn().decode()
