"""The native paged decode-attention kernel, in each instruction-set variant this CPU runs,
against a dense float64 reference."""

from __future__ import annotations

import pytest
import torch
from kernel_variants import kernel_in, variant_params

from localseek.kernels.paged_attention import DecodeAttentionKernel, decode_attention_kernel


@pytest.fixture(params=variant_params("paged_decode_attention"))
def kernel(request) -> DecodeAttentionKernel:
    return kernel_in(request.param, decode_attention_kernel)


def _dense(q, k_cache, v_cache, tables, lens, scale, window):
    """float64 attention of each q row over its sequence's first lens[s] cached tokens."""
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    outs = []
    for s in range(q.shape[0]):
        length = int(lens[s])
        blocks = tables[s, : -(-length // block_size)].long()
        k = k_cache[blocks].flatten(0, 1)[:length].double()  # [L, kv_heads, d]
        v = v_cache[blocks].flatten(0, 1)[:length].double()
        start = max(0, length - window) if window else 0
        k, v = k[start:], v[start:]
        qs = q[s].double().view(kv_heads, -1, q.shape[-1])  # [kv_heads, group, d]
        probs = (torch.einsum("hgd,lhd->hgl", qs, k) * scale).softmax(-1)
        outs.append(torch.einsum("hgl,lhd->hgd", probs, v).reshape(q.shape[1], -1))
    return torch.stack(outs)


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)]
)  # bf16: the output is rounded to bf16
@pytest.mark.parametrize("window", [None, 1, 30])
@pytest.mark.parametrize(
    ("q_heads", "kv_heads", "dim", "v_dim"), [(4, 1, 256, 256), (6, 2, 32, 48)]
)
def test_kernel_matches_dense_attention(kernel, dtype, tol, window, q_heads, kv_heads, dim, v_dim):
    """Demo-model shapes (4 query heads on 1 KV head of 256) and a GQA case with a different
    value width; contexts from one token to several blocks (lengths that leave partial vectors
    of keys at both widths), blocks scattered in the pool."""
    gen = torch.Generator().manual_seed(dim + (window or 0))
    block_size, num_blocks = 16, 64
    k_cache = torch.randn(num_blocks, block_size, kv_heads, dim, generator=gen).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, v_dim, generator=gen).to(dtype)
    lens = torch.tensor([1, 16, 17, 100, 250], dtype=torch.int32)
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:20] for _ in lens])
    q = torch.randn(len(lens), q_heads, dim, generator=gen).to(dtype)
    scale = dim**-0.5
    out = kernel(q, k_cache, v_cache, tables.to(torch.int32), lens, scale, window)
    assert out.shape == (len(lens), q_heads, v_dim) and out.dtype == dtype
    expected = _dense(q, k_cache, v_cache, tables, lens, scale, window)
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


def test_shapes_the_kernel_cannot_take_are_declined():
    kernel = DecodeAttentionKernel
    q, cache = torch.zeros(2, 4, 8), torch.zeros(4, 16, 1, 8)
    assert not kernel.handles(q, cache, cache)  # head_dim not a multiple of 16
    q, cache = torch.zeros(2, 4, 32), torch.zeros(4, 16, 1, 32)
    assert kernel.handles(q, cache, cache)
    assert not kernel.handles(q.half(), cache.half(), cache.half())  # fp16: torch path
    assert not kernel.handles(q, cache.transpose(0, 1), cache)  # not contiguous
    assert not kernel.handles(torch.zeros(2, 3, 32), torch.zeros(4, 16, 2, 32), cache)  # 3 % 2


@pytest.mark.parametrize("window", [None, 300, 600])
def test_one_long_sequence_is_split_across_threads(kernel, window):
    """Fewer (sequence, KV head) items than threads and at least 512 keys: the keys are split
    among the threads and the partial softmaxes merged (window 300: too few keys, not split)."""
    gen = torch.Generator().manual_seed(7)
    block_size, num_blocks = 16, 160
    k_cache = torch.randn(num_blocks, block_size, 1, 64, generator=gen)
    v_cache = torch.randn(num_blocks, block_size, 1, 64, generator=gen)
    lens = torch.tensor([2047], dtype=torch.int32)
    tables = torch.randperm(num_blocks, generator=gen)[:128][None].to(torch.int32)
    q = torch.randn(1, 4, 64, generator=gen) * 3  # peaked scores: the merge's rescaling matters
    threads = torch.get_num_threads()
    torch.set_num_threads(4)  # four ranges of keys, whatever the machine
    try:
        out = kernel(q, k_cache, v_cache, tables, lens, 0.125, window)
    finally:
        torch.set_num_threads(threads)
    expected = _dense(q, k_cache, v_cache, tables, lens, 0.125, window)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_bf16_output_is_the_float32_result_rounded_as_torch_rounds(kernel):
    """bf16 inputs widen exactly, so the bf16 call computes what the float32 call on the same
    values computes; its output must then be that result rounded to nearest even, bit for bit."""
    gen = torch.Generator().manual_seed(11)
    k_cache = torch.randn(32, 16, 2, 128, generator=gen).bfloat16()
    v_cache = torch.randn(32, 16, 2, 128, generator=gen).bfloat16()
    lens = torch.tensor([5, 77, 300], dtype=torch.int32)
    tables = torch.stack([torch.randperm(32, generator=gen)[:20] for _ in lens]).to(torch.int32)
    q = torch.randn(3, 12, 128, generator=gen).bfloat16()
    out = kernel(q, k_cache, v_cache, tables, lens, 128**-0.5, None)
    wide = kernel(q.float(), k_cache.float(), v_cache.float(), tables, lens, 128**-0.5, None)
    assert torch.equal(out, wide.bfloat16())
