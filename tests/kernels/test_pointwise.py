"""The native residual-add + RMSNorm and gated activation, in each instruction-set variant this
CPU runs, against float64, and the model layers' use of them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_variants import kernel_in, variant_params

from localseek.kernels.pointwise import PointwiseKernel, pointwise_kernel
from localseek.models.attention import write_kv
from localseek.models.layers import GatedMLP, RMSNorm, apply_rotary


@pytest.fixture(params=variant_params("pointwise"))
def kernel(request) -> PointwiseKernel:
    return kernel_in(request.param, pointwise_kernel)


def _rms_norm64(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


# Widths with and without a vector tail (1536: R1; 640: the demo; 100 and 7: tails only).
@pytest.mark.parametrize("dim", [1536, 640, 100, 7])
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_add_rms_norm_matches_float64(kernel, rows, dim):
    gen = torch.Generator().manual_seed(rows * dim)
    x, residual = torch.randn(rows, dim, generator=gen), torch.randn(rows, dim, generator=gen) * 4
    weight = torch.rand(dim, generator=gen) + 0.5
    x0, r0 = x.clone(), residual.clone()
    out, total = kernel.add_rms_norm(x, residual, weight, 1e-6)
    assert torch.equal(total, x + residual)  # one float32 add, as torch does it
    torch.testing.assert_close(
        out.double(), _rms_norm64(x + residual, weight, 1e-6), rtol=2e-6, atol=1e-6
    )
    assert torch.equal(x, x0) and torch.equal(residual, r0)  # neither input is written
    alone, none = kernel.add_rms_norm(x, None, weight, 1e-6)
    assert none is None
    torch.testing.assert_close(alone.double(), _rms_norm64(x, weight, 1e-6), rtol=2e-6, atol=1e-6)


def test_per_head_weights_repeat_over_the_tokens(kernel):
    """x [tokens, heads, dim] with weight [heads, dim]: Gemma's q and k norms in one call."""
    gen = torch.Generator().manual_seed(3)
    x, weight = torch.randn(5, 6, 256, generator=gen), torch.rand(6, 256, generator=gen) + 0.5
    out, _ = kernel.add_rms_norm(x, None, weight, 1e-6)
    torch.testing.assert_close(out.double(), _rms_norm64(x, weight, 1e-6), rtol=2e-6, atol=1e-6)
    assert kernel.add_rms_norm(x, None, torch.ones(4, 256), 1e-6) is None  # 30 rows, 4 weights


def test_a_zero_row_is_eps_scaled_not_nan(kernel):
    out, _ = kernel.add_rms_norm(torch.zeros(2, 64), None, torch.ones(64), 1e-6)
    assert torch.equal(out, torch.zeros(2, 64))


def _gelu_tanh64(g: torch.Tensor) -> torch.Tensor:
    g = g.double()
    return 0.5 * g * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (g + 0.044715 * g**3)))


@pytest.mark.parametrize(
    ("act", "reference"),
    [("silu", lambda g: F.silu(g.double())), ("gelu_pytorch_tanh", _gelu_tanh64)],
)
@pytest.mark.parametrize(("rows", "inter"), [(1, 8960), (4, 2048), (2, 37)])
def test_gated_activation_matches_float64(kernel, act, reference, rows, inter):
    gen = torch.Generator().manual_seed(rows * inter)
    gate_up = torch.randn(rows, 2 * inter, generator=gen) * 6  # well into both tails
    out = kernel.gated_act(gate_up, act)
    gate, up = gate_up.double().split(inter, dim=-1)
    torch.testing.assert_close(out.double(), reference(gate) * up, rtol=1e-5, atol=1e-6)


def test_an_activation_it_lacks_is_left_to_torch(kernel):
    assert kernel.gated_act(torch.randn(1, 64), "relu") is None


def test_it_takes_only_contiguous_float32_cpu_tensors(kernel):
    x = torch.randn(4, 64)
    assert kernel.handles(x, None)
    assert not kernel.handles(x.bfloat16())
    assert not kernel.handles(x.t())
    assert not kernel.handles(x, x.double())


@pytest.mark.skipif(pointwise_kernel() is None, reason="the native kernels do not run here")
def test_the_layers_use_it_for_float32_and_match_torch_ops(monkeypatch):
    """RMSNorm and GatedMLP give what their torch formulas give: through the native kernel for
    float32 rows, through torch's ops for bf16."""
    native, calls = pointwise_kernel(), []
    for name in ("add_rms_norm", "gated_act"):
        original = getattr(native, name)
        monkeypatch.setattr(
            native, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a)
        )
    gen = torch.Generator().manual_seed(0)
    norm = RMSNorm(256, 1e-6, offset=1.0)
    norm.weight.data = torch.randn(256, generator=gen) * 0.1
    x, residual = torch.randn(3, 256, generator=gen), torch.randn(3, 256, generator=gen)
    h, total = norm(x, residual)
    expected = F.rms_norm(x + residual, (256,), norm.weight.data + 1.0, 1e-6)
    torch.testing.assert_close(h, expected, rtol=2e-6, atol=1e-6)
    assert torch.equal(total, x + residual)
    mlp = GatedMLP(256, 96, act="silu")
    for p in mlp.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.05
    gate, up = (x @ mlp.gate_up_proj.weight.T).split(96, dim=-1)
    expected = (F.silu(gate) * up) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert calls == ["add_rms_norm", "gated_act"]
    h16, _ = norm(x.bfloat16(), residual.bfloat16())
    assert h16.dtype == torch.bfloat16 and len(calls) == 2


@pytest.mark.parametrize(("tokens", "rotary_dim"), [(1, 128), (5, 128), (300, 128), (3, 64)])
def test_rope_store_rotates_and_caches_as_the_torch_ops_do(kernel, tokens, rotary_dim):
    """q returned, k and v written at their slots, like apply_rotary + write_kv; the rest of
    the cache untouched. R1's heads: 12 query, 2 KV, head_dim 128 (64: partial rotary)."""
    gen = torch.Generator().manual_seed(tokens + rotary_dim)
    heads, kv_heads, dim = 12, 2, 128
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, generator=gen)
    angles = torch.rand(tokens, rotary_dim // 2, generator=gen) * 6
    cos, sin = angles.cos(), angles.sin()
    slots = torch.randperm(40 * 16, generator=gen)[:tokens]
    k_base, v_base = (torch.randn(40, 16, kv_heads, dim, generator=gen) for _ in range(2))
    caches = [k_base.clone(), v_base.clone(), k_base.clone(), v_base.clone()]
    q = kernel.rope_store(qkv, heads, kv_heads, cos, sin, slots, caches[0], caches[1])
    ref_q, ref_k, ref_v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    expected_q = apply_rotary(ref_q.reshape(tokens, heads, dim), cos, sin)
    write_kv(caches[2], apply_rotary(ref_k.reshape(tokens, kv_heads, dim), cos, sin), slots)
    write_kv(caches[3], ref_v.reshape(tokens, kv_heads, dim), slots)
    # bitwise: the same multiplies and subtraction as torch, none fused
    assert torch.equal(q, expected_q)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])


def test_rope_store_refuses_a_slot_outside_the_cache_and_writes_nothing(kernel):
    k_cache, v_cache = torch.zeros(2, 16, 2, 64), torch.zeros(2, 16, 2, 64)
    qkv, cos = torch.randn(2, 8 * 64), torch.ones(2, 32)
    for bad in ([3, 32], [-1, 0]):
        slots = torch.tensor(bad)
        assert kernel.rope_store(qkv, 4, 2, cos, cos, slots, k_cache, v_cache) is None
    slots = torch.tensor([3, 4])
    bf16_cache = torch.zeros(2, 16, 2, 64, dtype=torch.bfloat16)  # not float32: refused
    assert kernel.rope_store(qkv, 4, 2, cos, cos, slots, bf16_cache, v_cache) is None
    assert not k_cache.any() and not v_cache.any() and not bf16_cache.any()
    assert (
        kernel.rope_store(
            qkv, 4, 2, cos, cos, torch.tensor([3, 4], dtype=torch.int32), k_cache, v_cache
        )
        is None
    )
