"""Each instruction-set variant of a native kernel as a test parameter: the variants this CPU
executes run, the others are skipped with the real reason (what the CPU lacks)."""

from __future__ import annotations

import pytest

from localseek.kernels import build
from localseek.kernels.cpu_features import cpu_flags, describe
from localseek.kernels.variants import Variant, variants_of


def why_not(kernel: str, variant: Variant) -> str | None:
    """Why `variant` of `kernel` cannot run in this process, or None when it can."""
    reason = build.unavailable_reason(kernel)
    if reason is None and variant not in build.runnable_variants(kernel):
        missing = ", ".join(sorted(variant.requires - cpu_flags()))
        reason = f"this CPU ({describe()}) lacks {missing}, which the {variant.name} variant needs"
    return reason


def variant_params(kernel: str) -> list:
    """pytest params: every variant's name, skipped where it cannot run here."""
    params = []
    for variant in variants_of(kernel):
        reason = why_not(kernel, variant)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(variant.name, id=variant.name, marks=marks))
    return params


def kernel_in(variant: str, factory):
    """`factory(variant)`, checked to be the object compiled for that variant (not a fallback)."""
    kernel = factory(variant)
    assert kernel is not None, f"the {variant} variant did not build or load (see the log)"
    assert kernel.variant == variant, f"asked for {variant}, got code built for {kernel.variant}"
    return kernel
