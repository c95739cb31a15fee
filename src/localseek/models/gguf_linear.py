"""Linears and embeddings that keep a GGUF file's quantized blocks and compute on them.

A Q4_K_M file dequantized to float32 streams ~7x more bytes per decode step than its blocks;
keeping the blocks (usually views of the memory-mapped file, so no copy is made at all) and
multiplying them with the native kernel (kernels/gguf_matmul.c) is what lets a CPU decode at
the file's size rather than float32's. The model files know nothing of this: the checkpoint
copy (checkpoint.py) hands each PackedWeight to `PackedPlacement`, which swaps the Linear or
Embedding it lands in for the modules here.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from localseek.kernels.gguf_matmul import (
    GGUFMatmulKernel,
    PartTable,
    gguf_matmul_kernel,
    part_table,
)
from localseek.weights.gguf_dequant import dequantize_blocks
from localseek.weights.packed_weight import PackedWeight

logger = logging.getLogger(__name__)


class GGUFLinear(nn.Module):
    """y = x @ W.T (+ bias) with W made of row ranges in GGUF block formats.

    A fused projection (q/k/v, gate/up) is one module whose parts may be of different types
    (Q4_K_M files store v_proj in Q6_K); the kernel takes them all in one call.
    """

    # Activation precision at decode: 2 levels of int8 (~15 bits; see
    # GGUFMatmulKernel.__call__), or 1 with --gguf-activations q8 (set after load).
    levels = 2

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: GGUFMatmulKernel,
        bias: nn.Parameter | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kernel = kernel
        self.bias = bias
        self.parts: dict[int, PackedWeight] = {}  # first output row -> its rows
        self._table: PartTable | None = None

    def add_part(self, first_row: int, weight: PackedWeight) -> None:
        self.parts[first_row] = weight
        self._table = None

    def ordered_parts(self) -> list[PackedWeight]:
        return [self.parts[k] for k in sorted(self.parts)]

    def is_complete(self) -> bool:
        row = 0
        for first in sorted(self.parts):
            if first != row:
                return False
            row += self.parts[first].shape[0]
        return row == self.out_features

    def table(self) -> PartTable:
        if self._table is None:
            self._table = part_table([(p.ggml_type, p.data) for p in self.ordered_parts()])
        return self._table

    def dequantized(self) -> torch.Tensor:
        """float32 [out, in]: the exact weights (reference and fallback)."""
        return torch.cat([p.dequantize() for p in self.ordered_parts()])

    def multiply(self, flat: torch.Tensor) -> torch.Tensor | None:
        """flat [tokens, in] @ W.T (+ bias) by the block kernel, or None when the kernel does
        not take these rows (forward then dequantizes; the lean decode steps decline)."""
        y = self.kernel(flat, self.table(), self.levels)
        return y if y is None else self._add_bias(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # [tokens, in]
        y = self.multiply(flat)
        if y is None:  # a dtype or device the kernel does not take: exact, slow
            y = self._add_bias(F.linear(flat, self.dequantized().to(flat.dtype)))
        return y.view(*x.shape[:-1], self.out_features)

    def _add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y.add_(self.bias.to(y.dtype))

    def extra_repr(self) -> str:
        types = ",".join(sorted({_type_name(p.ggml_type) for p in self.parts.values()}))
        return f"in={self.in_features}, out={self.out_features}, blocks={types}"


class GGUFEmbedding(nn.Module):
    """Token embeddings looked up from GGUF blocks: only the rows asked for are dequantized."""

    def __init__(self, weight: PackedWeight, dtype: torch.dtype):
        super().__init__()
        self.packed = weight
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.packed.data.index_select(0, ids.reshape(-1).cpu())  # [n, bytes per row]
        out = dequantize_blocks(rows.numpy(), self.packed.ggml_type).to(self.dtype)
        return out.view(*ids.shape, self.embedding_dim).to(ids.device)


def _type_name(ggml_type: int) -> str:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType(ggml_type).name


class PackedPlacement:
    """Puts PackedWeights into a model during the checkpoint copy.

    A PackedWeight landing in a plain Linear (or part of a fused one) turns that Linear into a
    GGUFLinear; one landing in an Embedding turns it into a GGUFEmbedding, and a Linear tied to
    that embedding (a tied vocabulary projection) into a GGUFLinear over the same blocks. Any
    other destination, a block type the kernel lacks, or a fused Linear that also receives
    float parts gets the exactly dequantized values instead.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.kernel = gguf_matmul_kernel()
        self.linears: dict[str, GGUFLinear] = {}  # parameter name -> module now holding it
        self.embeddings: dict[int, GGUFEmbedding] = {}  # id(old weight Parameter) -> module
        self.dense_parts: dict[str, list[tuple[int, torch.Tensor]]] = {}

    def place(self, target: str, dest: torch.Tensor, tensor: torch.Tensor | PackedWeight) -> bool:
        """Whether `tensor` for parameter `target` (destination view `dest`) was taken here;
        if not, the caller copies it (dequantized if packed) into `dest`."""
        first_row = dest.storage_offset() // max(1, dest.stride(0)) if dest.dim() == 2 else 0
        if target in self.linears:
            if isinstance(tensor, PackedWeight):
                self.linears[target].add_part(first_row, tensor)
            else:  # a float part of a fused projection that is otherwise packed
                self.dense_parts.setdefault(target, []).append((first_row, tensor))
            return True
        if not isinstance(tensor, PackedWeight) or self.kernel is None:
            return False
        owner_name, _, leaf = target.rpartition(".")
        owner = self.model.get_submodule(owner_name)
        if leaf != "weight":
            return False
        if _is_plain_linear(owner):
            if not self.kernel.handles(tensor.ggml_type, owner.in_features):
                return False
            module = GGUFLinear(owner.in_features, owner.out_features, self.kernel, owner.bias)
            module.add_part(first_row, tensor)
            _replace(self.model, owner_name, module)
            self.linears[target] = module
            return True
        if isinstance(owner, nn.Embedding) and dest.shape == owner.weight.shape:
            module = GGUFEmbedding(tensor, owner.weight.dtype)
            self.embeddings[id(owner.weight)] = module
            _replace(self.model, owner_name, module)
            return True
        return False

    def finish(self) -> int:
        """After the copy: tie vocabulary projections to packed embeddings, dequantize fused
        linears that got float parts too. Returns how many modules compute on blocks."""
        for name, module in list(self.model.named_modules()):
            weight = getattr(module, "weight", None)
            if isinstance(module, nn.Linear) and id(weight) in self.embeddings:
                packed = self.embeddings[id(weight)].packed
                if self.kernel is not None and self.kernel.handles(
                    packed.ggml_type, packed.shape[1]
                ):
                    tied = GGUFLinear(
                        module.in_features, module.out_features, self.kernel, module.bias
                    )
                    tied.add_part(0, packed)
                    _replace(self.model, name, tied)
                else:
                    module.weight = nn.Parameter(packed.dequantize().to(weight.dtype), False)
        for target, dense in self.dense_parts.items():
            self._unpack(target, dense)
        return sum(isinstance(m, GGUFLinear | GGUFEmbedding) for m in self.model.modules())

    def _unpack(self, target: str, dense: list[tuple[int, torch.Tensor]]) -> None:
        module = self.linears.pop(target)
        logger.info("%s mixes float and quantized parts: dequantized", target)
        weight = torch.empty(module.out_features, module.in_features)
        for first, part in module.parts.items():
            weight[first : first + part.shape[0]] = part.dequantize()
        for first, part in dense:
            weight[first : first + part.shape[0]] = part
        linear = nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
        linear.weight = nn.Parameter(weight.to(_dtype_of(self.model)), requires_grad=False)
        linear.bias = module.bias
        _replace(self.model, target.rpartition(".")[0], linear)


def _is_plain_linear(module: nn.Module) -> bool:
    """An unmodified linear (not one another rewrite already replaced)."""
    from localseek.models.layers import Linear

    return type(module) in (Linear, nn.Linear)


def _dtype_of(model: nn.Module) -> torch.dtype:
    return getattr(model, "dtype", torch.float32)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
