"""ModelSource: what any weight format (HF directory, GGUF file) hands to the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from localseek.weights.packed_weight import PackedWeight
    from localseek.weights.tokenizer import Tokenizer

WeightIterator = Iterator[tuple[str, "torch.Tensor | PackedWeight"]]


@dataclass
class ModelSource:
    """An opened model: its HF-style config, its tokenizer, and lazy access to its tensors.

    `weight_iter` is called once per `weights()` call and yields (HF parameter name, tensor)
    pairs one at a time, so a loader never holds more than one tensor it has not yet copied.
    A tensor stored in one of the `keep_packed` GGUF block types comes as a PackedWeight (its
    blocks, not floats); formats without such types ignore the argument.
    """

    config: dict  # HF-style config.json content (a GGUF source builds one from its metadata)
    tokenizer: Tokenizer
    num_tensors: int
    weight_iter: Callable[[frozenset[int]], WeightIterator]
    path: str = ""  # where it was opened from (directory, file, or resolved Hub snapshot)
    format: str = "hf"  # "hf" | "gguf"
    extra: dict = field(default_factory=dict)  # format-specific facts (e.g. GGUF quant type)

    def weights(self, keep_packed: frozenset[int] = frozenset()) -> WeightIterator:
        return self.weight_iter(keep_packed)

    @property
    def quantized_types(self) -> frozenset[str]:
        """Names of the quantized storage types in the file (a GGUF's Q4_K, ...), else empty."""
        types = self.extra.get("tensor_types") or {}
        return frozenset(t for t in types if t not in ("F32", "F16", "BF16", "F64"))
