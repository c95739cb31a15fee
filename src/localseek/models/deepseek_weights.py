"""Loading DeepSeek checkpoints: per-expert names into stacked experts, FP8 block scales, MTP layers.

- `experts.{e}.gate_proj/up_proj/down_proj.weight` load into the stacked `experts.w13[e]` /
  `experts.w2[e]`; `gate_proj`/`up_proj` of dense and shared MLPs into the two halves of
  `gate_up_proj`.
- DeepSeek-V3/R1 ship float8_e4m3 weights, each with `<name>_scale_inv` holding one float32
  scale per 128x128 block; they are multiplied out at load (weight = fp8 * scale) into the
  model dtype, so every device runs them.
- Multi-token-prediction layers (`model.layers.{num_hidden_layers + i}`, used only for
  speculative decoding) are skipped with one log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from localseek.errors import ModelLoadError
from localseek.models.checkpoint import copy_checkpoint

logger = logging.getLogger(__name__)

_FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)
_SCALE_SUFFIX = "_scale_inv"
_EXPERT = re.compile(
    r"^(?P<prefix>.*\.experts)\.(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$"
)
_GATE_UP = re.compile(r"^(?P<prefix>.*)\.(?P<proj>gate_proj|up_proj)\.weight$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def dequantize_fp8_blocks(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int] = (128, 128),
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """weight [out, in] fp8 times scale_inv [ceil(out/bo), ceil(in/bi)] block-broadcast -> dtype."""
    rows, cols = weight.shape
    expected = (-(-rows // block[0]), -(-cols // block[1]))
    if tuple(scale_inv.shape) != expected:
        raise ModelLoadError(
            f"fp8 weight of shape {(rows, cols)} needs block scales of shape {expected} "
            f"for {block[0]}x{block[1]} blocks, got {tuple(scale_inv.shape)}"
        )
    scale = scale_inv.float().repeat_interleave(block[0], dim=0)[:rows]
    scale = scale.repeat_interleave(block[1], dim=1)[:, :cols]  # [out, in]
    return (weight.float() * scale).to(dtype)


def dequantize_stream(
    weights: Iterable[tuple[str, torch.Tensor]], block: tuple[int, int], dtype: torch.dtype
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pair each fp8 `<name>` with its `<name>_scale_inv` (in either order) and dequantize.

    Other tensors pass through. Checkpoints list a weight and its scale next to each other,
    so only a pair or two is ever held back.
    """
    held_weights: dict[str, torch.Tensor] = {}
    held_scales: dict[str, torch.Tensor] = {}
    for name, tensor in weights:
        if name.endswith(_SCALE_SUFFIX):
            base = name[: -len(_SCALE_SUFFIX)]
            if base in held_weights:
                yield base, _dequantize(base, held_weights.pop(base), tensor, block, dtype)
            else:
                held_scales[base] = tensor
        elif tensor.dtype in _FP8_DTYPES:
            if name in held_scales:
                yield name, _dequantize(name, tensor, held_scales.pop(name), block, dtype)
            else:
                held_weights[name] = tensor
        else:
            yield name, tensor
    unpaired = sorted(held_weights) + [n + _SCALE_SUFFIX for n in sorted(held_scales)]
    if unpaired:
        raise ModelLoadError(
            f"fp8 checkpoint has {len(unpaired)} weight(s) without their block scale (or scale "
            f"without weight): {', '.join(unpaired[:8])}{' ...' if len(unpaired) > 8 else ''}"
        )


def _dequantize(name, weight, scale_inv, block, dtype) -> torch.Tensor:
    try:
        return dequantize_fp8_blocks(weight, scale_inv, block, dtype)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{name}: {exc.message}") from exc


def skip_mtp_layers(
    weights: Iterable[tuple[str, torch.Tensor]], num_layers: int, num_mtp_layers: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """Drop the multi-token-prediction layers' tensors, logging how many were skipped."""
    skipped = 0
    for name, tensor in weights:
        match = _LAYER.match(name)
        if match and num_layers <= int(match.group(1)) < num_layers + num_mtp_layers:
            skipped += 1
            continue
        yield name, tensor
    if skipped:
        logger.info(
            "skipped %d tensor(s) of %d multi-token-prediction layer(s) (model.layers.%d+): "
            "they serve speculative decoding, which localseek does not use",
            skipped,
            num_mtp_layers,
            num_layers,
        )


def load_deepseek_weights(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    *,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Copy HF-named tensors into `model`; unknown, mis-shaped or missing ones raise ModelLoadError."""
    copy_checkpoint(
        model,
        weights,
        _destination,
        lambda data, _, part: _part_view(data, part),
        _num_parts,
        skip=skip,
    )


# A part: None (whole tensor), ("half", 0|1) of gate_up_proj, ("w13", e, 0|1), ("w2", e).
def _destination(name: str) -> tuple[str, tuple | None]:
    match = _EXPERT.match(name)
    if match:
        prefix, expert, proj = match["prefix"], int(match["expert"]), match["proj"]
        if proj == "down_proj":
            return f"{prefix}.w2", ("w2", expert)
        return f"{prefix}.w13", ("w13", expert, 0 if proj == "gate_proj" else 1)
    match = _GATE_UP.match(name)
    if match:
        half = 0 if match["proj"] == "gate_proj" else 1
        return f"{match['prefix']}.gate_up_proj.weight", ("half", half)
    return name, None


def _part_view(data: torch.Tensor, part: tuple | None) -> torch.Tensor:
    if part is None:
        return data
    if part[0] == "half":
        return data.chunk(2, dim=0)[part[1]]
    if part[0] == "w2":
        return data[part[1]]
    _, expert, half = part
    return data[expert].chunk(2, dim=0)[half]


def _num_parts(name: str, param: torch.Tensor) -> int:
    if name.endswith(".w13"):
        return 2 * param.shape[0]
    if name.endswith(".w2"):
        return param.shape[0]
    if name.endswith(".gate_up_proj.weight"):
        return 2
    return 1
