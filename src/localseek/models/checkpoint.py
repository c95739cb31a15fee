"""Copying HF-named checkpoint tensors into a model's (possibly fused) parameters.

Every model maps a checkpoint name to (its parameter, a part of it) in its own way — fused
q/k/v rows, gate/up halves, stacked experts — but the copy, the shape check and the errors
for unknown or missing weights are the same, so they live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

import torch
from torch import nn

from localseek.errors import ModelLoadError
from localseek.weights.packed_weight import PackedWeight

# Buffers some checkpoints carry that every model recomputes itself.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

# name -> (target parameter name, part key; None for the whole tensor)
Locate = Callable[[str], tuple[str, Hashable]]
# (parameter data, target name, part) -> the view the checkpoint tensor is copied into
View = Callable[[torch.Tensor, str, Hashable], torch.Tensor]
# (target name, parameter) -> how many distinct parts make the parameter whole
NumParts = Callable[[str, torch.Tensor], int]


def copy_checkpoint(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    locate: Locate,
    view: View,
    num_parts: NumParts,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Copy (name, tensor) pairs into `model`; names in `skip` are ignored.

    A PackedWeight (GGUF blocks the loader asked to keep) goes to the module it lands in as
    blocks where a packed form exists (gguf_linear.PackedPlacement), dequantized elsewhere.
    Raises ModelLoadError naming unexpected tensors, wrong shapes or parameters left incomplete.
    """
    params = dict(model.named_parameters())
    placement = None
    loaded: dict[str, set] = {name: set() for name in params}
    unexpected: list[str] = []
    for name, tensor in weights:
        if name in skip or name.endswith(IGNORED_SUFFIXES):
            continue
        target, part = locate(name)
        param = params.get(target)
        if param is None:
            unexpected.append(name)
            continue
        dest = view(param.data, target, part)
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ModelLoadError(
                f"weight {name!r} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(dest.shape)}; the config does not match the checkpoint"
            )
        if isinstance(tensor, PackedWeight) and placement is None:
            from localseek.models.gguf_linear import PackedPlacement

            placement = PackedPlacement(model)
        if placement is None or not placement.place(target, dest, tensor):
            dest.copy_(tensor.dequantize() if isinstance(tensor, PackedWeight) else tensor)
        loaded[target].add(part)
    if placement is not None:
        placement.finish()
    if unexpected:
        raise ModelLoadError(
            f"checkpoint has {len(unexpected)} weight(s) this model does not know: "
            f"{_first(unexpected)}"
        )
    missing = sorted(n for n, parts in loaded.items() if len(parts) < num_parts(n, params[n]))
    if missing:
        raise ModelLoadError(f"checkpoint lacks {len(missing)} weight(s): {_first(missing)}")


def _first(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")
