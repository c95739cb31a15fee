"""Instruction-set variants of the native kernels, and which one this CPU runs.

Every kernel source compiles for each variant it lists; the C code picks vector widths and
instructions from the compiler's predefined macros (__AVX512F__, __AVX512VNNI__, ...). At run
time the first listed variant whose required flags the CPU has is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from localseek.kernels.cpu_features import cpu_flags


@dataclass(frozen=True)
class Variant:
    """One instruction set a kernel is compiled for."""

    name: str
    flags: tuple[str, ...]  # compiler flags selecting the instructions
    requires: frozenset[str]  # CPU flags (/proc/cpuinfo names) it needs to run

    def runs_on(self, cpu: frozenset[str]) -> bool:
        return self.requires <= cpu


AVX2 = Variant("avx2", ("-mavx2", "-mfma", "-mf16c"), frozenset({"avx2", "fma", "f16c"}))
AVX512 = Variant(
    "avx512",
    ("-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl"),
    frozenset({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl"}),
)
AVX512_VNNI = Variant(
    "avx512_vnni",
    (*AVX512.flags, "-mavx512vnni"),
    AVX512.requires | {"avx512_vnni"},
)
AVX512_BF16 = Variant(
    "avx512_bf16",
    (*AVX512.flags, "-mavx512bf16"),
    AVX512.requires | {"avx512_bf16"},
)

# Each kernel's variants, best first.
KERNEL_VARIANTS: dict[str, tuple[Variant, ...]] = {
    "paged_decode_attention": (AVX512, AVX2),
    "int8_matvec": (AVX512, AVX2),
    "gemma3_decode": (AVX512_BF16,),
    "gguf_matmul": (AVX512_VNNI, AVX2),
    # pointwise's and the attention's AVX-512 code with gguf_matmul's integer sums, which are
    # the same with or without VNNI: the step's bits match the per-kernel calls on any host
    "gguf_decode_step": (AVX512_VNNI, AVX512, AVX2),
    "pointwise": (AVX512, AVX2),
}


def variants_of(kernel: str) -> tuple[Variant, ...]:
    return KERNEL_VARIANTS[kernel]


def best_variant(kernel: str, cpu: frozenset[str] | None = None) -> Variant | None:
    """The first of the kernel's variants this CPU can run, or None."""
    cpu = cpu_flags() if cpu is None else cpu
    return next((v for v in KERNEL_VARIANTS[kernel] if v.runs_on(cpu)), None)
