"""oneDNN-packed bf16 linears: bitwise the results of the plain ones, swapped in at load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_gemma3 import load_ours, stepwise_logits
from tiny_gemma3 import make_tiny_gemma3
from torch import nn

from localseek.models.packed_linear import PackedLinear, can_pack, pack_linears

pytestmark = pytest.mark.skipif(
    not can_pack(torch.zeros(1, 1, dtype=torch.bfloat16)),
    reason="oneDNN packs bf16 weights only on CPUs with native bf16 (AVX512-BF16/AMX) and a "
    "torch built with oneDNN; this host lacks one of them",
)
PROMPT = [(i * 37 + 11) % 440 for i in range(29)]


@pytest.mark.parametrize("rows", [1, 5, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_is_bitwise_the_plain_one(rows, bias):
    torch.manual_seed(rows)
    linear = nn.Linear(640, 1536, bias=bias).to(torch.bfloat16)
    x = torch.randn(2, rows, 640, dtype=torch.bfloat16)  # leading dims are kept
    packed = PackedLinear(linear)
    with torch.inference_mode():
        assert torch.equal(packed(x), F.linear(x, linear.weight, linear.bias))
    assert not hasattr(packed, "weight") and packed.packed.is_mkldnn


def test_only_bf16_cpu_linears_are_packed_and_mla_weights_are_left_alone():
    model = nn.ModuleDict(
        {
            "q_proj": nn.Linear(8, 8).to(torch.bfloat16),
            "kv_b_proj": nn.Linear(8, 8).to(torch.bfloat16),  # MLA reads this weight directly
            "router": nn.Linear(8, 8),  # float32: packing would change its sums
        }
    )
    assert pack_linears(model) == 1
    assert isinstance(model["q_proj"], PackedLinear)
    assert type(model["kv_b_proj"]) is nn.Linear and type(model["router"]) is nn.Linear


def test_a_packed_bf16_model_gives_bitwise_the_same_logits(tmp_path):
    """Tiny Gemma 3 in bf16 with its tied vocabulary projection: prefill, a chunk over cached
    KV and decode steps give identical logits once every linear is packed; the embedding
    lookup keeps reading the plain table."""
    model = load_ours(make_tiny_gemma3(tmp_path), dtype=torch.bfloat16)
    chunks = [20, 1, 1, 1, 6]
    reference = stepwise_logits(model, PROMPT, chunks)
    table = model.model.embed_tokens.weight
    assert pack_linears(model) == 3 * 4 + 1  # qkv, o, gate_up, down per layer, and lm_head
    assert isinstance(model.lm_head, PackedLinear) and model.model.embed_tokens.weight is table
    assert torch.equal(stepwise_logits(model, PROMPT, chunks), reference)
