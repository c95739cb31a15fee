"""Native kernels are compiled once per machine and variant into a cache, every variant compiles
on every host, the variant loaded is one this CPU runs, and their absence is not an error."""

from __future__ import annotations

import logging
import subprocess

import pytest

from localseek.kernels import build
from localseek.kernels.cpu_features import parse_cpuinfo
from localseek.kernels.variants import AVX2, AVX512_BF16, KERNEL_VARIANTS, best_variant

needs_compiler = pytest.mark.skipif(
    build.unavailable_reason() is not None, reason=str(build.unavailable_reason())
)
# gguf_matmul has an AVX2 variant, so it runs on every x86-64 host CI uses.
KERNEL = "gguf_matmul"
needs_kernel = pytest.mark.skipif(
    build.unavailable_reason(KERNEL) is not None, reason=str(build.unavailable_reason(KERNEL))
)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache and a cleared in-process load cache, restored afterwards."""
    monkeypatch.setenv("LOCALSEEK_CACHE_DIR", str(tmp_path))
    build.load.cache_clear()
    yield tmp_path
    build.load.cache_clear()


@needs_kernel
def test_a_kernel_is_built_once_then_loaded_from_the_cache(fresh):
    lib = build.load(KERNEL)
    assert lib is not None and hasattr(lib, "localseek_gguf_matmul")
    (built,) = (fresh / "kernels").glob(f"{KERNEL}-*.so")
    assert build.best_variant(KERNEL).name in built.name
    stamp = built.stat().st_mtime_ns
    build.load.cache_clear()
    assert build.load(KERNEL) is not None
    assert built.stat().st_mtime_ns == stamp  # reused, not rebuilt


@needs_compiler
@pytest.mark.parametrize(
    "kernel,variant",
    [(k, v) for k, variants in KERNEL_VARIANTS.items() for v in variants],
    ids=lambda p: getattr(p, "name", p),
)
def test_every_variant_of_every_kernel_compiles_on_this_host(fresh, kernel, variant):
    """Whatever this CPU is, CI compiles each variant (running it needs the CPU: other tests)."""
    assert build.compile_variant(kernel, variant).exists()


def test_the_variant_comes_from_the_cpu_flags_not_from_overrides(monkeypatch):
    avx2_host = parse_cpuinfo("processor : 0\nflags : fpu sse avx avx2 fma f16c bmi2\n")
    avx512_host = avx2_host | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"}
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")  # must not matter
    assert best_variant(KERNEL, avx2_host).name == "avx2"
    assert best_variant(KERNEL, avx512_host).name == "avx512_vnni"
    assert best_variant("gemma3_decode", avx512_host) is None  # needs avx512_bf16
    assert best_variant("gemma3_decode", avx512_host | {"avx512_bf16"}) is AVX512_BF16
    assert not AVX2.runs_on(parse_cpuinfo("flags : sse sse2 avx\n"))


@needs_kernel
def test_a_variant_this_cpu_cannot_run_is_refused_with_the_reason(fresh, caplog):
    missing = [v for vs in KERNEL_VARIANTS.values() for v in vs if not v.runs_on(build.cpu_flags())]
    if not missing:
        pytest.skip("this CPU runs every variant")
    with caplog.at_level(logging.INFO, logger="localseek.kernels.build"):
        assert build.load(KERNEL, missing[0].name) is None
    assert "does not run on this CPU" in caplog.text


def test_disabled_kernels_fall_back_with_the_reason_logged(fresh, monkeypatch, caplog):
    monkeypatch.setenv("LOCALSEEK_NATIVE_KERNELS", "0")
    with caplog.at_level(logging.INFO, logger="localseek.kernels.build"):
        assert build.load(KERNEL) is None
    assert "disabled by LOCALSEEK_NATIVE_KERNELS" in caplog.text
    assert not (fresh / "kernels").exists()


@needs_kernel
def test_a_failing_compiler_falls_back_with_its_message(fresh, monkeypatch, tmp_path, caplog):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: this compiler always fails' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with caplog.at_level(logging.INFO, logger="localseek.kernels.build"):
        assert build.load(KERNEL) is None
    assert "this compiler always fails" in caplog.text
    with pytest.raises(subprocess.SubprocessError):
        build.compile_variant(KERNEL, AVX2)
