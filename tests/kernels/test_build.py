"""Native kernels are compiled once per machine into a cache, and their absence is not an error."""

from __future__ import annotations

import logging

import pytest

from localseek.kernels import build

needs_compiler = pytest.mark.skipif(
    build.unavailable_reason() is not None, reason=str(build.unavailable_reason())
)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache and a cleared in-process load cache, restored afterwards."""
    monkeypatch.setenv("LOCALSEEK_CACHE_DIR", str(tmp_path))
    build.load.cache_clear()
    yield tmp_path
    build.load.cache_clear()


@needs_compiler
def test_a_kernel_is_built_once_then_loaded_from_the_cache(fresh):
    lib = build.load("paged_decode_attention")
    assert lib is not None and hasattr(lib, "localseek_paged_decode_attention")
    (built,) = (fresh / "kernels").glob("paged_decode_attention-*.so")
    stamp = built.stat().st_mtime_ns
    build.load.cache_clear()
    assert build.load("paged_decode_attention") is not None
    assert built.stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_disabled_kernels_fall_back_with_the_reason_logged(fresh, monkeypatch, caplog):
    monkeypatch.setenv("LOCALSEEK_NATIVE_KERNELS", "0")
    with caplog.at_level(logging.INFO, logger="localseek.kernels.build"):
        assert build.load("paged_decode_attention") is None
    assert "disabled by LOCALSEEK_NATIVE_KERNELS" in caplog.text
    assert not (fresh / "kernels").exists()


@needs_compiler
def test_a_failing_compiler_falls_back_with_its_message(fresh, monkeypatch, tmp_path, caplog):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: this compiler always fails' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with caplog.at_level(logging.INFO, logger="localseek.kernels.build"):
        assert build.load("paged_decode_attention") is None
    assert "this compiler always fails" in caplog.text
