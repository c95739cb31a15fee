"""Weight quantization of a loaded model's linears, with a kernel chosen per batch size.

`quantize_model` rewrites a model from outside (the model files know nothing of it): every
`nn.Linear` becomes a `QuantizedLinear` that stores int8 (per output channel) or int4 (per
group of 32 inputs) weights (weight_quantizers.py) and, on each call, runs the kernel its plan
names for that many rows. On the CPU the vocabulary projection also keeps its dense table and
recomputes each row's top outputs from it (top_refine.py); elsewhere a tied projection is
quantized once and the embedding lookup reads the same int8 rows (`QuantizedEmbedding`), so
the dense table is freed.

Which kernel is fastest depends on the shape and on M, the rows in the call (decode: the
number of running sequences; prefill: tokens): see `default_plan`. The fast kernels are
CPU-only; any other device gets the generic dequantize-then-matmul path, which is correct
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from localseek.errors import ConfigError
from localseek.kernels.int8_matvec import int8_matvec_kernel
from localseek.models.packed_linear import (
    READ_AS_TENSOR,
    can_pack,
    pack_weight,
    packed_linear,
    tensor_bytes,
)
from localseek.models.top_refine import REFINE_TOP, refine_top
from localseek.models.weight_quantizers import (
    GROUP_SIZE,
    dequantize_int4,
    input_balance,
    quantize_int4,
    quantize_int8,
)

# (max_rows, kernel name) pairs, ascending; a call with M rows runs the first kernel whose
# max_rows >= M. The last entry's max_rows is ANY_ROWS.
Plan = tuple[tuple[int, str], ...]
ANY_ROWS = 1 << 62
_RESIDUAL_ROWS = 4  # W8A8 calls with at most this many rows quantize activations twice


# ---- kernels: (module, x [M, K]) -> y [M, N] --------------------------------------------------


def _dense(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    if hasattr(m, "packed") and x.dtype == torch.bfloat16:
        return packed_linear(x, m.packed, None)  # bitwise F.linear, see packed_linear.py
    return F.linear(x, m.weight)


def _int8_dequant(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """Generic: any device, any M; pays a pass over the whole weight per call."""
    w = m.q8.float() * m.scale8[:, None] * m.balance8[None, :]  # [N, K]
    return F.linear(x, w.to(x.dtype))


def _int8_w8a16(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """CPU: activations stay in their float dtype, weights dequantized inside the kernel."""
    return torch._weight_int8pack_mm(x * m.balance8_act, m.q8, m.scale8_act)


def _int8_native(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """CPU, 1-4 rows: the native int8 matvec (kernels/int8_matvec.c); w8a16 where it is not
    built or the shape does not suit it. Same weights and scales as w8a16, float32 sums."""
    kernel = int8_matvec_kernel()
    y = kernel(x, m.q8, m.scale8, m.balance8) if kernel and kernel.handles(x, m.q8) else None
    return _int8_w8a16(m, x) if y is None else y  # balance and dtype handled in C


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 x [M, K] -> (int8 [M, K], scale [M, 1]) with x ~ q * scale."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-30) / 127.0
    return torch.round(x / scale).to(torch.int8), scale


def _int8_w8a8(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """CPU: activations quantized per row to int8, int8 x int8 -> int32 (VNNI) matmul.

    Up to _RESIDUAL_ROWS rows, the rounding residual of each row is quantized again and sent
    through the same matmul as extra rows (~15-bit activations): at so few rows the matmul
    costs the same, and one int8 step on a balanced vocab projection's input measurably
    hurt top-1 agreement (see default_plan).
    """
    xf = x.float() * m.balance8  # [M, K]
    xq, x_scale = _quantize_rows(xf)
    rows = x.shape[0]
    if rows > _RESIDUAL_ROWS:
        return _rescale(torch._int_mm(xq, m.q8.t()), m.scale8).mul_(x_scale)  # [M, N]
    rq, r_scale = _quantize_rows(xf - xq.float() * x_scale)
    y = _rescale(torch._int_mm(torch.cat((xq, rq)), m.q8.t()), m.scale8)  # [2M, N]
    return y[:rows].mul_(x_scale).add_(y[rows:].mul_(r_scale))


def _int8_onednn(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """CPU: oneDNN's int8 matmul on a pre-packed weight, activations rounded to uint8 with one
    scale and zero point for the whole call (the kernel takes no per-row scales).

    One scale suits the vocabulary projection, whose rows are all RMS-normalised hidden states.
    """
    xf = x.float() * m.balance8  # [M, K]
    lo, hi = torch.aminmax(xf)
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)  # zero must be exactly representable
    scale = ((hi - lo) / 255.0).clamp(min=1e-30)
    zero = torch.round(-lo / scale)
    xq = torch.round(xf / scale + zero).clamp_(0, 255).to(torch.uint8)
    qlinear = torch.ops.onednn.qlinear_pointwise.tensor
    return qlinear(
        xq, scale, zero.to(torch.int32), m.q8_onednn, m.scale8, m.zero8,
        None, 1.0, 0, torch.float32, "none", [], "",
    )  # fmt: skip


def onednn_int8_available() -> bool:
    """oneDNN's int8 matmul, where the CPU has VNNI (or AMX) int8 dot products. Without them
    oneDNN multiplies with AVX2's vpmaddubsw, whose int16 pair sums saturate: 5-15% error
    measured on an AVX2-only EPYC, so the plan must not pick it there."""
    from localseek.kernels.cpu_features import cpu_flags

    has_int8_dots = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
    return (
        has_int8_dots
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.onednn, "qlinear_prepack")
    )


def _rescale(acc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int32 acc [M, N] -> float32 acc * scale, in acc's own memory.

    For the vocab projection at M=64 that is 64 MiB: a fresh float32 tensor of that size is
    page-faulted in on every call (glibc maps it anew), 49 ms against 22 ms in place here.
    """
    out = acc.view(torch.float32).copy_(acc)  # elementwise, same offsets: safe in place
    return out.mul_(scale)


def _int4_dequant(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """Generic: any device, any M."""
    return F.linear(x, dequantize_int4(m.q4, m.scale_zero4).to(x.dtype))


def _int4_w4a16(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """CPU: group-wise int4 weights unpacked inside the kernel; fastest at M of 1-4."""
    return torch._weight_int4pack_mm_for_cpu(x.contiguous(), m.q4, m.group_size, m.scale_zero_act)


@dataclass(frozen=True)
class Kernel:
    fn: Callable[[QuantizedLinear, torch.Tensor], torch.Tensor]
    storage: str  # which stored form it reads: "dense" | "int8" | "int4" | "int4_cpu"
    cpu_only: bool


KERNELS: dict[str, Kernel] = {
    "dense": Kernel(_dense, "dense", cpu_only=False),
    "int8_dequant": Kernel(_int8_dequant, "int8", cpu_only=False),
    "int8_w8a16": Kernel(_int8_w8a16, "int8", cpu_only=True),
    "int8_native": Kernel(_int8_native, "int8", cpu_only=True),
    "int8_w8a8": Kernel(_int8_w8a8, "int8", cpu_only=True),
    "int8_onednn": Kernel(_int8_onednn, "int8_onednn", cpu_only=True),
    "int4_dequant": Kernel(_int4_dequant, "int4", cpu_only=False),
    "int4_w4a16": Kernel(_int4_w4a16, "int4_cpu", cpu_only=True),
}


# ---- modules ----------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """A bias-optional linear whose weight is stored in the forms its plan's kernels read."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        plan: Plan,
        *,
        out_dtype: torch.dtype | None = None,
        group_size: int = GROUP_SIZE,
        balance_inputs: bool = True,
        refine: int = 0,
    ):
        super().__init__()
        # A model's parameters require grad: without detach every temporary of the
        # quantizers stays alive in an autograd graph (+3.3 GiB for the demo's lm_head).
        weight = weight.detach()
        self.out_features, self.in_features = weight.shape
        self.plan = plan
        self.out_dtype = out_dtype  # None: the input's dtype
        self.group_size = group_size
        self.refine = refine  # > 0: the quantized kernels' top `refine` outputs made exact
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        storages = {KERNELS[name].storage for _, name in plan}
        if refine:
            storages.add("dense")  # refinement reads rows of the original weight
        act = weight.dtype  # activations arrive in the model's dtype
        if "dense" in storages:
            # The dense kernel reads a oneDNN-packed copy where it can (same results, faster);
            # refinement and the other devices read rows of the plain weight.
            packed = any(n == "dense" for _, n in plan) and can_pack(weight)
            if packed:
                self.register_buffer("packed", pack_weight(weight))
            if refine or not packed:
                self.register_buffer("weight", weight)
        if storages & {"int8", "int8_onednn"}:
            balance = input_balance(weight) if balance_inputs else torch.ones(self.in_features)
            q8, scale8 = quantize_int8(weight, balance.to(weight.device))
            if "int8" in storages:
                self.register_buffer("q8", q8)  # [N, K] int8
            if "int8_onednn" in storages:
                self.register_buffer("q8_onednn", torch.ops.onednn.qlinear_prepack(q8, None))
                self.register_buffer("zero8", torch.zeros(len(q8), dtype=torch.int64))  # [N]
            del q8
            self.register_buffer("scale8", scale8)  # [N] float32
            self.register_buffer("balance8", balance.to(weight.device))  # [K] float32
            # The w8a16 kernel takes scales in the activations' dtype.
            self.register_buffer("scale8_act", scale8.to(act))
            self.register_buffer("balance8_act", self.balance8.to(act))
        int4 = storages & {"int4", "int4_cpu"}
        if len(int4) == 2:
            raise ConfigError(f"plan {plan} mixes the CPU int4 kernel with the generic one")
        if int4:
            q4, scale_zero = quantize_int4(weight, group_size, cpu_pack="int4_cpu" in int4)
            self.register_buffer("q4", q4)
            if "int4_cpu" in int4:  # the CPU kernel reads them in the activations' dtype
                self.register_buffer("scale_zero_act", scale_zero.to(act))
            else:
                self.register_buffer("scale_zero4", scale_zero)  # [K / group, N, 2] float32

    def kernel_for(self, rows: int) -> str:
        for max_rows, name in self.plan:
            if rows <= max_rows:
                return name
        return self.plan[-1][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)  # [M, K]
        name = self.kernel_for(x.shape[0])
        y = KERNELS[name].fn(self, x)  # [M, N]
        if self.refine and name != "dense":
            y = refine_top(self.weight, x, y.float(), self.refine)
        if self.bias is not None:
            y = y + self.bias
        y = y.to(self.out_dtype or x.dtype)
        return y.view(*lead, self.out_features)

    def stored_bytes(self) -> int:
        return sum(tensor_bytes(b) for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, plan={self.plan}"


class QuantizedEmbedding(nn.Module):
    """Embedding lookup from a tied projection's int8 rows: row i is q8[i] * scale8[i] * balance8.

    The projection's per-output-channel scale is a per-row scale of the table, so the lookup
    reads exactly the weights the logits use; the dense table is not kept.
    """

    def __init__(self, source: QuantizedLinear, dtype: torch.dtype):
        super().__init__()
        # Read through the projection, never copied; a tuple so it is not registered twice
        # (model.to() moves it once, as lm_head).
        self._source = (source,)
        self.dtype = dtype

    @property
    def q8(self) -> torch.Tensor:
        return self._source[0].q8

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        src = self._source[0]
        rows = F.embedding(input_ids, src.q8).float()  # [num_tokens, hidden]
        return (rows * src.scale8[input_ids, None] * src.balance8).to(self.dtype)


# ---- choosing kernels and rewriting a model ----------------------------------------------------


def default_plan(method: str, vocab: bool, fast_kernels: bool) -> Plan:
    """The kernels for one linear, by M (rows per call).

    Lead's quiet-machine measurements, ms (bf16 packed / int8 w8a16 / int8 oneDNN / int4):
      lm_head 262144x640: M=1 13.6 / 14 / 9.4 / 4.9;  M=4 12.5 / - / 9.2 / 8.5;
        M=5 12.1 / - / 8.6 / 16.6;  M=16 19.1 / 69 / 12.1 / 33;  M=64 64 / - / 50 / -
      layer 4096x640: M=1 0.068 / 0.08 / 0.086 / 0.08;  M=16 0.22 / 0.62 / 0.15 / 0.53
      a decode step's 72 layer matvecs at M=1 (weights from memory): w8a16 7.9-8.5,
        native int8 6.7-6.8; in the demo's batch-1 step 24.0 -> 19.7 (best of 8 rounds)
    The vocabulary projection runs int4 up to 4 rows and oneDNN int8 above, and with the
    fast kernels its top REFINE_TOP outputs per row are recomputed from the dense weight (see
    quantize_model), so greedy and sampled choices see exact logits. Layers run the native
    int8 matvec (kernels/int8_matvec.c; torch's w8a16 where it is not built), or int4 for
    `int4`, up to 4 rows and their packed bf16 weight above: exact where batches are
    large enough to pay for it (oneDNN int8 with one activation scale per call would cost
    layers accuracy). int4 layers are not exact: requantizing the demo GGUF's 5-bit weights
    to 4 bits costs top-1 agreement. Without the CPU kernels every linear dequantizes per call.
    """
    if not fast_kernels:
        return ((ANY_ROWS, "int4_dequant" if vocab and method == "int4" else "int8_dequant"),)
    if vocab:
        above = "int8_onednn" if onednn_int8_available() else "int8_w8a8"
        return ((4, "int4_w4a16"), (ANY_ROWS, above))
    if method == "int4":
        few = "int4_w4a16"
    else:
        few = "int8_native" if int8_matvec_kernel() is not None else "int8_w8a16"
    return ((4, few), (ANY_ROWS, "dense"))


def _feasible(plan: Plan, linear: nn.Linear, group_size: int) -> Plan:
    """The plan with CPU kernels swapped for ones that handle this shape.

    int4 needs K in whole groups and N in multiples of 16; `_weight_int8pack_mm` silently
    returns wrong values, different on every call, when K is not a multiple of 16 (found on a
    tiny DeepSeek, whose q_b_proj has K=24): such linears take the int8 W8A8 kernel instead.
    The native int8 matvec needs K in multiples of 64.
    """
    n, k = linear.weight.shape
    swap = {}
    if k % 16:
        swap["int8_w8a16"] = "int8_w8a8"
    if k % 64:  # the native matvec reads 64 inputs at a time
        swap["int8_native"] = swap.get("int8_w8a16", "int8_w8a16")
    if k % group_size or n % 16:
        swap["int4_w4a16"] = swap.get("int8_w8a16", "int8_w8a16")
        swap["int4_dequant"] = "int8_dequant"
    return tuple((rows, swap.get(name, name)) for rows, name in plan)


@dataclass(frozen=True)
class QuantizationReport:
    """What quantize_model changed, for the load log."""

    method: str
    num_linears: int
    bytes_before: int  # the replaced weights (and a tied embedding table), counted once each
    bytes_after: int  # everything the new modules store
    embedding: str  # how the token embedding is looked up afterwards


def _unique_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if t.is_mkldnn:  # opaque: no storage, never shared
            seen[id(t)] = tensor_bytes(t)
        else:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    method: str,
    *,
    plan: Plan | None = None,
    vocab_plan: Plan | None = None,
    fast_kernels: bool | None = None,
    group_size: int = GROUP_SIZE,
) -> QuantizationReport:
    """Replace the model's linears with QuantizedLinear in place.

    `plan` forces a plan on every linear but the vocabulary projection, `vocab_plan` on that
    one (tests, benchmarks); by default each gets `default_plan`. `fast_kernels` defaults to
    whether the weight lives on the CPU.
    """
    allowed = ("none", "int8", "int4")
    if method not in allowed:
        raise ConfigError(f"quantization must be one of {allowed}, got {method!r}")
    if method == "none":
        return QuantizationReport(method, 0, 0, 0, "unchanged")
    lm_head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    tied = lm_head is not None and embed is not None and lm_head.weight is embed.weight
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.endswith(READ_AS_TENSOR)
    ]
    before = _unique_bytes(t for _, m in targets for t in m.parameters())
    replaced = []
    for name, linear in targets:
        fast = linear.weight.device.type == "cpu" if fast_kernels is None else fast_kernels
        forced = vocab_plan if linear is lm_head else plan
        chosen = forced or default_plan(method, linear is lm_head, fast)
        quantized = QuantizedLinear(
            linear.weight,
            linear.bias,
            _feasible(chosen, linear, group_size),
            out_dtype=torch.float32 if linear is lm_head else None,
            group_size=group_size,
            refine=REFINE_TOP if linear is lm_head and fast else 0,
        )
        model.set_submodule(name, quantized)
        replaced.append(quantized)
    embedding = "own table"
    if tied:
        if hasattr(model.lm_head, "q8") and not hasattr(model.lm_head, "weight"):
            model.model.embed_tokens = QuantizedEmbedding(model.lm_head, embed.weight.dtype)
            embedding = "int8 rows shared with lm_head"
        else:
            replaced.append(embed)  # the dense table stays for the lookup
            embedding = "dense table kept"
    after = _unique_bytes(t for m in replaced for t in [*m.buffers(), *m.parameters()])
    return QuantizationReport(method, len(targets), before, after, embedding)
