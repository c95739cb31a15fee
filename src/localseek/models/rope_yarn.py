"""YaRN rotary scaling (DeepSeek-V2/V3's long context), with the mscale attention corrections.

YaRN keeps the high-frequency rotary dims as trained (extrapolation), slows the low-frequency
ones by `factor` (interpolation) and blends linearly between, over a band of dims chosen by
how many full turns each dim makes within the original context (`beta_fast`, `beta_slow`).

Two magnitude corrections come with it, both from `mscale(factor, m) = 0.1 * m * ln(factor) + 1`:
- cos/sin are multiplied by mscale(factor, mscale) / mscale(factor, mscale_all_dim), returned
  here as the attention scale of the rotary table (1.0 for DeepSeek-V3, whose two are equal);
- the softmax scale of MLA is multiplied by mscale(factor, mscale_all_dim) ** 2
  (`yarn_softmax_scale`), since DeepSeek applies that correction to every dim, not only the
  rotary ones.

`yarn_freqs` has the `RopeFrequencyFn` signature of `models.layers`, so a model plugs it in with
`build_rotary(params, dim, max_pos, extra_types={"yarn": yarn_freqs})`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """The magnitude correction for a context stretched by `factor` (1.0 when not stretched)."""
    if factor <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(factor) + 1.0


def _correction_dim(num_rotations: float, dim: int, base: float, original_max: int) -> float:
    # The rotary dim index whose wavelength fits `num_rotations` times in the original context.
    return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_freqs(params: Mapping, dim: int, max_position: int) -> tuple[torch.Tensor, float]:
    """(inv_freq [dim // 2] float32, cos/sin scale) for YaRN `params` over `dim` rotary dims.

    `params` are the merged rope settings (`layers.rope_parameters`): rope_theta, factor,
    original_max_position_embeddings, and optionally beta_fast (32), beta_slow (1), mscale,
    mscale_all_dim, attention_factor, truncate (True).
    """
    base = float(params.get("rope_theta", 10000.0))
    original_max = int(params.get("original_max_position_embeddings") or max_position)
    factor = params.get("factor")
    factor = float(factor) if factor is not None else max_position / original_max
    beta_fast = float(params.get("beta_fast") or 32)
    beta_slow = float(params.get("beta_slow") or 1)

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)

    low = _correction_dim(beta_fast, dim, base, original_max)
    high = _correction_dim(beta_slow, dim, base, original_max)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp

    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    extrapolated = 1.0 / (base**exponents)  # as trained
    interpolated = extrapolated / factor  # slowed by factor
    # 0 for dims below `low` (fast, keep trained), 1 above `high` (slow, interpolate).
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0.0, 1.0)
    inv_freq = interpolated * ramp + extrapolated * (1.0 - ramp)
    return inv_freq, float(attention_factor)


def yarn_softmax_scale(params: Mapping) -> float:
    """Multiplier of the attention softmax scale: mscale(factor, mscale_all_dim) ** 2 under YaRN.

    1.0 when the rope type is not YaRN-like or `mscale_all_dim` is absent or zero, as in
    DeepSeek's reference code.
    """
    if params.get("rope_type", "default") == "default":
        return 1.0
    mscale_all_dim = params.get("mscale_all_dim")
    factor = params.get("factor")
    if not mscale_all_dim or factor is None:
        return 1.0
    m = yarn_mscale(float(factor), float(mscale_all_dim))
    return m * m
