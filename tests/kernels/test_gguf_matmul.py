"""The GGUF block-format matmul against the blocks dequantized by the gguf package, for every
block type, row count, activation precision and instruction-set variant this CPU runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from localseek.kernels import build
from localseek.kernels.gguf_matmul import PACKED_TYPES, gguf_matmul_kernel, part_table

_T = GGMLQuantizationType
VARIANTS = [v.name for v in build.runnable_variants("gguf_matmul")]
pytestmark = pytest.mark.skipif(
    build.unavailable_reason("gguf_matmul") is not None or not VARIANTS,
    reason=str(build.unavailable_reason("gguf_matmul")),
)
TYPES = sorted(_T(t) for t in PACKED_TYPES)
MAX_INT8_ROWS = 4


def random_blocks(qtype: _T, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random bytes are valid blocks of every type once the float16 scales are made sane."""
    rng = np.random.default_rng(seed)
    values, nbytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // values, nbytes), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.02, size=(rows, cols // values, 2)).astype(np.float16)
    scale_bytes = scales.view(np.uint8).reshape(rows, cols // values, 4)
    if qtype == _T.Q6_K:  # d is the block's last field
        raw[..., 208:210] = scale_bytes[..., :2]
    else:  # d first; the K-quants' dmin after it
        raw[..., 0:2] = scale_bytes[..., :2]
        if qtype in (_T.Q4_K, _T.Q5_K):
            raw[..., 2:4] = scale_bytes[..., 2:]
    return raw.reshape(rows, -1)


def quantized_activations(x: torch.Tensor, levels: int) -> torch.Tensor:
    """What the kernel multiplies: x in int8 blocks of 256 values when the row length allows,
    else 32 (d = amax / 127, round half to even), plus, with two levels, what the first missed
    in steps of d / 256 (clipped to +-127)."""
    block = 256 if x.shape[1] % 256 == 0 else 32
    blocks = x.float().reshape(x.shape[0], -1, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = amax / 127
    # tensor / tensor: correctly rounded, as the kernel's division (torch's scalar / tensor
    # multiplies by a reciprocal and can move a product off a rounding tie)
    inv = torch.where(amax > 0, torch.full_like(amax, 127) / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inv)
    total = q.double() * scale.double()
    if levels == 2:
        missed = (
            blocks.double() - total
        ).float()  # one rounding, as the kernel's fused multiply-add
        q2 = torch.round(missed * (inv * 256)).clamp(-127, 127)
        total += q2.double() * (scale.double() / 256)
    return total.reshape(x.shape)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 70])
@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("cols", [512, 288, 1280])  # 1280: K walked in two chunks
def test_matches_the_dequantized_blocks(variant, qtype, rows, levels, cols):
    if cols % GGML_QUANT_SIZES[qtype][0]:
        pytest.skip(f"{qtype.name} rows are whole blocks of {GGML_QUANT_SIZES[qtype][0]}")
    kernel = gguf_matmul_kernel(variant)
    assert kernel.variant == variant
    raw = random_blocks(qtype, 37, cols)
    weight = torch.from_numpy(dequantize(raw, qtype).astype(np.float64))
    # Seeded: over random draws the one-level error relative to a product that happens to be
    # small by cancellation reaches 0.13 (Q5_K, 1 in ~2000); the bounds hold for these inputs.
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows * cols + qtype))
    x[:, 7] *= 30  # an outlier channel, as real activations have
    y = kernel(x, part_table([(int(qtype), torch.from_numpy(raw))]), levels)
    # Up to 4 rows: int8 activations; above, each weight row dequantized to float32 and
    # multiplied with the float32 activations (exact products).
    multiplied = quantized_activations(x, levels) if rows <= MAX_INT8_ROWS else x.double()
    expected = multiplied @ weight.T
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
    # Two levels carry ~15 bits: close to the unquantized product itself.
    exact = x.double() @ weight.T
    bound = 6e-2 if levels == 1 else 5e-4
    assert ((y.double() - exact).norm() / exact.norm()).item() < bound


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("rows", [3, 9])
def test_bf16_activations_and_outputs(variant, rows):
    kernel = gguf_matmul_kernel(variant)
    raw = random_blocks(_T.Q4_K, 16, 256)
    table = part_table([(int(_T.Q4_K), torch.from_numpy(raw))])
    x = torch.randn(rows, 256).bfloat16()
    y = kernel(x, table)
    assert y.dtype == torch.bfloat16
    expected = x.double() @ torch.from_numpy(dequantize(raw, _T.Q4_K).astype(np.float64)).T
    assert ((y.double() - expected).norm() / expected.norm()).item() < 1e-2  # bf16 output


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("rows", [2, 9])
def test_parts_of_different_types_fill_their_own_columns(variant, rows):
    """A fused q/k/v whose v is Q6_K while q and k are Q4_K (as in Q4_K_M files) is one call."""
    kernel = gguf_matmul_kernel(variant)
    parts = [(_T.Q4_K, 20), (_T.Q6_K, 9), (_T.Q8_0, 5)]
    raws = [random_blocks(t, n, 512, seed=i) for i, (t, n) in enumerate(parts)]
    x = torch.randn(rows, 512)
    fused = kernel(x, part_table([(int(t), torch.from_numpy(r)) for (t, _), r in zip(parts, raws)]))
    assert fused.shape == (rows, 34)
    column = 0
    for (t, n), raw in zip(parts, raws):
        alone = kernel(x, part_table([(int(t), torch.from_numpy(raw))]))
        torch.testing.assert_close(fused[:, column : column + n], alone, rtol=0, atol=0)
        column += n


def test_a_row_length_that_is_not_whole_blocks_is_refused():
    kernel = gguf_matmul_kernel()
    raw = random_blocks(_T.Q4_K, 4, 256)
    assert not kernel.handles(int(_T.Q4_K), 320)
    assert kernel(torch.randn(2, 320), part_table([(int(_T.Q4_K), torch.from_numpy(raw))])) is None
