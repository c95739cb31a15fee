"""PackedWeight: a quantized GGUF tensor handed to the model as its blocks, not as floats."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from localseek.weights.gguf_dequant import dequantize_blocks


@dataclass(frozen=True)
class PackedWeight:
    """A 2-D weight [rows, cols] stored as ggml blocks, one row of blocks per output row.

    `data` is usually a view of the memory-mapped file, so keeping it costs no copy: the
    resident weights are the file's own pages. A model that has no packed form for the
    parameter it lands in copies `dequantize()` instead.
    """

    ggml_type: int  # GGMLQuantizationType id
    data: torch.Tensor  # uint8 [rows, bytes per row]
    shape: tuple[int, int]  # the logical [rows, cols]

    def dequantize(self) -> torch.Tensor:
        """float32 [rows, cols]."""
        return dequantize_blocks(self.data.numpy(), self.ggml_type)

    def rows(self, index: torch.Tensor) -> PackedWeight:
        """The rows `index` (a row permutation or selection), still packed."""
        data = self.data.index_select(0, index)
        return PackedWeight(self.ggml_type, data, (int(index.numel()), self.shape[1]))
