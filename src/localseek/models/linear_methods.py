"""How a model's linear weights are stored and multiplied, chosen once at load.

- gguf:  a quantized GGUF's blocks are kept as they are and multiplied by the native kernel
         (gguf_linear.py); the default for such a file wherever that kernel runs.
- dense: weights dequantized exactly to the model dtype (the reference, and any HF checkpoint).
- int8 / int4: dense, then requantized (models/quantization.py): opt-in, it loses accuracy.
The loader asks the weight source for packed blocks only when the method keeps them, so the
model files never see the choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from localseek.config import GGUF_ACTIVATIONS
from localseek.errors import ConfigError
from localseek.weights.source import ModelSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearMethod:
    name: str  # "gguf" | "dense" | "int8" | "int4"
    keep_packed: frozenset[int]  # GGUF block types loaded as blocks (empty: none)
    requantize: str | None  # "int8" / "int4": models/quantization.py rewrites after load
    reason: str  # why this method, for the load log
    # int8 levels GGUF block matmuls of up to 4 rows quantize activations in (config's
    # GGUF_ACTIVATIONS); gguf_linear.GGUFLinear.levels.
    activation_levels: int = 2


def choose_linear_method(
    requested: str, source: ModelSource, device: torch.device, activations: str = "q16"
) -> LinearMethod:
    """`requested` is ModelConfig.quantization: auto, gguf, none, int8 or int4;
    `activations` ModelConfig.gguf_activations."""
    if requested in ("int8", "int4"):
        return LinearMethod(requested, frozenset(), requested, f"--quantization {requested}")
    if requested == "none":
        return LinearMethod("dense", frozenset(), None, "--quantization none: exact weights")
    why_not = _why_not_packed(source, device)
    if requested == "gguf" and why_not is not None:
        raise ConfigError(f"--quantization gguf cannot be used: {why_not}")
    if why_not is not None:
        return LinearMethod("dense", frozenset(), None, why_not)
    from localseek.kernels.gguf_matmul import PACKED_TYPES, gguf_matmul_kernel

    kernel = gguf_matmul_kernel()
    names = _type_ids(source.quantized_types)
    kept = frozenset(t for t in names.values() if t in PACKED_TYPES)
    others = sorted(n for n, t in names.items() if t not in PACKED_TYPES)
    if others:
        logger.warning(
            "GGUF block type(s) %s have no native kernel: those tensors are dequantized at load "
            "(kept as blocks: %s)",
            ", ".join(others),
            ", ".join(sorted(n for n, t in names.items() if t in PACKED_TYPES)) or "none",
        )
    levels = GGUF_ACTIVATIONS[activations]
    return LinearMethod(
        "gguf",
        kept,
        None,
        f"quantized GGUF blocks multiplied as stored ({kernel.variant} kernel, {activations} "
        f"decode activations)",
        activation_levels=levels,
    )


def _why_not_packed(source: ModelSource, device: torch.device) -> str | None:
    if source.format != "gguf":
        return "only GGUF files carry packed blocks"
    if not source.quantized_types:
        return "the file's weights are not quantized"
    if device.type != "cpu":
        return f"no GGUF block kernel for {device.type} yet: weights dequantized"
    from localseek.kernels.build import unavailable_reason
    from localseek.kernels.gguf_matmul import gguf_matmul_kernel

    if gguf_matmul_kernel() is None:
        reason = unavailable_reason("gguf_matmul") or "its build failed (see the log above)"
        return f"the native GGUF kernel is unavailable: {reason}; weights dequantized"
    return None


def _type_ids(names: frozenset[str]) -> dict[str, int]:
    from gguf import GGMLQuantizationType

    return {n: int(GGMLQuantizationType[n]) for n in names}
