"""The native int8 matvec, in each instruction-set variant this CPU runs, against float64, and
the plan's use of it."""

from __future__ import annotations

import pytest
import torch
from kernel_variants import kernel_in, variant_params

from localseek.kernels import build
from localseek.kernels.int8_matvec import Int8MatvecKernel, int8_matvec_kernel
from localseek.models.quantization import quantize_model


@pytest.fixture(params=variant_params("int8_matvec"))
def kernel(request) -> Int8MatvecKernel:
    return kernel_in(request.param, int8_matvec_kernel)


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize(("n", "k"), [(4096, 640), (640, 2048), (17, 64)])
def test_matvec_matches_float64(kernel, rows, n, k):
    gen = torch.Generator().manual_seed(rows * n + k)
    q8 = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    scale = torch.rand(n, generator=gen) * 0.01
    x = torch.randn(rows, k, generator=gen)
    y = kernel(x, q8, scale)
    expected = (x.double() @ q8.double().T) * scale.double()
    assert y.shape == (rows, n) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_bf16_activations_with_a_balance_come_back_in_bf16(kernel):
    gen = torch.Generator().manual_seed(5)
    q8 = torch.randint(-127, 128, (256, 640), generator=gen, dtype=torch.int8)
    scale, balance = torch.rand(256, generator=gen) * 0.01, torch.rand(640, generator=gen) + 0.5
    x = torch.randn(2, 640, generator=gen).bfloat16()
    y = kernel(x, q8, scale, balance)
    assert y.dtype == torch.bfloat16
    expected = ((x.double() * balance.double()) @ q8.double().T) * scale.double()
    torch.testing.assert_close(y.double(), expected, rtol=1e-2, atol=1e-2)  # bf16 rounding


def test_shapes_it_cannot_take_are_declined():
    kernel = Int8MatvecKernel
    q8 = torch.zeros(8, 64, dtype=torch.int8)
    assert kernel.handles(torch.zeros(4, 64), q8)
    assert not kernel.handles(torch.zeros(5, 64), q8)  # more than 4 rows
    assert not kernel.handles(torch.zeros(1, 48), torch.zeros(8, 48, dtype=torch.int8))  # K % 64
    assert not kernel.handles(torch.zeros(1, 64), q8.t().contiguous().t())  # not contiguous
    assert not kernel.handles(torch.zeros(1, 64, dtype=torch.float16), q8)  # fp16


@pytest.mark.skipif(
    build.unavailable_reason("int8_matvec") is not None,
    reason=str(build.unavailable_reason("int8_matvec")),
)
def test_int8_layers_decode_through_it(monkeypatch):
    """An int8 linear planned on the CPU takes the native matvec for 1-4 rows, and its output
    is the w8a16 kernel's up to float32 summation order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(640, 256, bias=False)).to(torch.bfloat16)
    quantize_model(model, "int8")
    linear = model[0]
    assert linear.kernel_for(1) == "int8_native" and linear.kernel_for(4) == "int8_native"
    kernel = int8_matvec_kernel()  # the variant the plan gets
    calls = []
    real = kernel.__call__
    monkeypatch.setattr(type(kernel), "__call__", lambda self, *a: calls.append(1) or real(*a))
    x = torch.randn(3, 640, dtype=torch.bfloat16)
    y = linear(x)
    assert calls, "the native kernel did not run"
    expected = torch._weight_int8pack_mm(x * linear.balance8_act, linear.q8, linear.scale8_act)
    torch.testing.assert_close(y.float(), expected.float(), rtol=2e-2, atol=2e-2)
