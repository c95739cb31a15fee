"""Gemma 3 decode steps in one native call (kernels/gemma3_decode.c), for int8 layers on CPU.

`attach` runs after quantization: when every layer's linears hold int8 weights for the native
matvec and the model computes in bfloat16 on a CPU the kernels build for, the model's
`native_decode` is set and decode-only steps of up to `max_rows` rows run the whole decoder
stack in C. Anything else (prefill, mixed steps, bigger batches), or a call the kernel refuses,
runs the ordinary per-module forward.

Both paths read the same int8 weights up to 4 rows. From 5 to `max_rows` (64 on CPUs with
AVX512-BF16) the per-module path runs the packed bf16 weights instead, while the fused step
stays on int8 with bf16 activations, which is the precision of torch's int8 x bf16 kernel; it
keeps a second copy of the layers' int8 weights packed for that (`pack_for_batches`; +100 MB
on the demo). Measured on the demo model (2 cores), per decode step, per-module -> fused:
batch 1 ~19 -> ~10 ms, 8 ~32 -> ~20, 16 ~41 -> ~32, 32 ~62 -> ~49, 64 ~123 -> ~108; see
docs/benchmarks-default-model.md.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

import torch

from localseek.kernels.gemma3_decode import (
    CacheView,
    Gemma3DecodeKernel,
    Gemma3Dims,
    Gemma3Layer,
    Q8Linear,
    RopeTable,
    gemma3_decode_kernel,
)
from localseek.models.attention import AttentionMetadata
from localseek.models.gemma3 import Gemma3ForCausalLM
from localseek.models.quantization import QuantizedLinear

_NATIVE_MATVEC = "int8_native"
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh")


def attach(model: torch.nn.Module) -> str | None:
    """Give a Gemma 3 model its native decode step; returns why not, or None when attached."""
    if not isinstance(model, Gemma3ForCausalLM):
        return "not a Gemma 3 model"
    reason = _unsupported(model)
    if reason is None:
        kernel = gemma3_decode_kernel()
        if kernel is None:
            return "native kernels are not available here"
        model.native_decode = NativeGemma3Decode(model, kernel)
    return reason


def _unsupported(model: Gemma3ForCausalLM) -> str | None:
    args = model.args
    if model.dtype != torch.bfloat16:
        return f"the model computes in {model.dtype}, the kernel in bfloat16"
    if args.hidden_act not in _GELU_TANH:
        return f"activation {args.hidden_act!r} (the kernel has tanh GELU)"
    if args.head_dim % 32 or args.head_dim > 512 or args.num_heads // args.num_kv_heads > 16:
        return "head shape outside the kernel's limits"
    inputs = (args.hidden_size, args.num_heads * args.head_dim, args.intermediate_size)
    if any(k % 64 for k in inputs):
        return f"matmul inputs {inputs} are not all multiples of 64"
    if args.num_kv_heads * args.head_dim % 16:
        return "projection outputs are not multiples of 16"
    for layer in model.model.layers:
        for linear in _linears(layer):
            if not isinstance(linear, QuantizedLinear) or linear.bias is not None:
                return "layers are not int8-quantized without bias"
            if linear.kernel_for(1) != _NATIVE_MATVEC:
                return f"the quantization plan runs {linear.kernel_for(1)} for one row"
            if linear.q8.device.type != "cpu":
                return "weights are not on the CPU"
    return None


def _linears(layer: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    attn, mlp = layer.self_attn, layer.mlp
    return (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)


def pack_for_batches(q8: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] -> [N / 16, K / 2, 16, 2]: per 16 outputs, each pair of inputs side by side,
    the layout of the kernel's batch path (int8_dot.h)."""
    n, k = q8.shape
    return q8.view(n // 16, 16, k // 2, 2).permute(0, 2, 1, 3).contiguous()


class NativeGemma3Decode:
    """Callable from Gemma3ForCausalLM.forward: (scaled embeddings, rotary tables, caches,
    metadata) -> the decoder stack's output [rows, hidden], or None to use the torch path."""

    def __init__(self, model: Gemma3ForCausalLM, kernel: Gemma3DecodeKernel):
        args, layers = model.args, model.model.layers
        self._run = kernel.run
        self.max_rows = kernel.max_rows
        batches = self.max_rows > 4  # a packed copy of the layers for the batch path
        self._rope_index = {t: i for i, t in enumerate(sorted(set(args.layer_types)))}
        # The structs hold raw pointers: keep every tensor they point into alive here.
        self._tensors: list[torch.Tensor] = []
        self._layers = (Gemma3Layer * len(layers))()
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            norms = [
                self._keep(n.scale())
                for n in (
                    layer.input_layernorm,
                    layer.post_attention_layernorm,
                    layer.pre_feedforward_layernorm,
                    layer.post_feedforward_layernorm,
                )
            ]
            qk_norm = self._keep(attn.qk_norm_scale().contiguous())
            self._layers[i] = Gemma3Layer(
                *(self._q8(linear, batches) for linear in _linears(layer)),
                *(t.data_ptr() for t in norms),
                qk_norm.data_ptr(),
                None,  # caches: bound on the first call
                None,
                0,
                self._rope_index[attn.layer_type],
                attn.sliding_window or 0,
            )
        self._dims = Gemma3Dims(
            len(layers),
            args.hidden_size,
            args.num_heads,
            args.num_kv_heads,
            args.head_dim,
            args.intermediate_size,
            0,  # block size: from the caches
            args.rms_norm_eps,
            layers[0].self_attn.scale,
        )
        self._caches: list | None = None
        self._groups: tuple[int, ...] | None = None

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        self._tensors.append(tensor)
        return tensor

    def _q8(self, linear: QuantizedLinear, batches: bool) -> Q8Linear:
        packed = self._keep(pack_for_batches(linear.q8)).data_ptr() if batches else None
        return Q8Linear(
            linear.q8.data_ptr(),
            packed,
            linear.scale8.data_ptr(),
            linear.balance8.data_ptr(),
            linear.out_features,
            linear.in_features,
        )

    def __call__(
        self,
        hidden: torch.Tensor,
        cos_sin: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        kv_caches: list[tuple[torch.Tensor, ...]],
        meta: AttentionMetadata,
    ) -> torch.Tensor | None:
        rows = hidden.shape[0]
        if rows > self.max_rows or hidden.dtype != torch.bfloat16 or not self._bind(kv_caches):
            return None
        views = self._views(meta)
        ropes = (RopeTable * len(self._rope_index))()
        for layer_type, index in self._rope_index.items():
            cos, signed_sin = cos_sin[layer_type]
            ropes[index] = RopeTable(cos.data_ptr(), signed_sin.data_ptr())
        hidden = hidden.contiguous()
        status = self._run(
            ctypes.byref(self._dims), self._layers, views, ropes, hidden.data_ptr(), rows
        )
        return None if status else hidden

    def _bind(self, kv_caches: list[tuple[torch.Tensor, ...]]) -> bool:
        """Point the layers at the runner's caches (once per cache list); False if unusable."""
        if kv_caches is self._caches:
            return True
        for k_cache, v_cache in kv_caches:
            if not all(
                c.dtype == torch.bfloat16 and c.is_contiguous() and c.dim() == 4
                for c in (k_cache, v_cache)
            ):
                return False
        for layer, (k_cache, v_cache) in zip(self._layers, kv_caches, strict=True):
            layer.k_cache, layer.v_cache = k_cache.data_ptr(), v_cache.data_ptr()
        self._dims.block_size = kv_caches[0][0].shape[1]
        self._caches = kv_caches
        return True

    def _views(self, meta: AttentionMetadata) -> ctypes.Array:
        """One CacheView per distinct group metadata, and each layer's index into them."""
        index_of: dict[int, int] = {}
        metas: list[AttentionMetadata] = []
        groups = []
        for i in range(len(self._layers)):
            layer_meta = meta.for_layer(i)
            index = index_of.get(id(layer_meta))
            if index is None:
                index = index_of[id(layer_meta)] = len(metas)
                metas.append(layer_meta)
            groups.append(index)
        if tuple(groups) != self._groups:
            for layer, group in zip(self._layers, groups, strict=True):
                layer.group = group
            self._groups = tuple(groups)
        views = (CacheView * len(metas))()
        for index, m in enumerate(metas):
            views[index] = CacheView(
                m.slot_mapping.data_ptr(),
                m.block_tables.data_ptr(),
                m.context_lens.data_ptr(),
                m.block_tables.shape[1],
            )
        return views
