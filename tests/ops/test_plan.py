"""`localseek plan` figures against hand-computed values and against real checkpoints' tensors."""

from __future__ import annotations

import json
import math

import pytest
from safetensors import safe_open

from localseek.errors import InvalidRequestError, NotFoundError, UnsupportedModelError
from localseek.ops.plan import format_plan, known_models, plan

# ---- hand-computed: DeepSeek-R1-Distill-Qwen-7B (Qwen2: q/k/v biases, untied head) ----------
# embed = head = 152064 x 3584 = 544,997,376; final norm 3584.
# per layer: q 3584x3584 = 12,845,056; k+v 2 x 512 x 3584 = 3,670,016; o 12,845,056;
#   mlp 3 x 3584 x 18944 = 203,685,888; 2 norms 7168; q/k/v biases 3584 + 2 x 512 = 4608
#   -> 233,057,792; x 28 layers = 6,525,618,176.
QWEN7B_PARAMS = 2 * 544_997_376 + 3584 + 28 * 233_057_792
QWEN7B_KV_PER_TOKEN = 28 * 2 * 4 * 128 * 2  # layers x (K, V) x kv heads x head_dim x bf16
# Linear weights quantized under int4 (norms and biases are not): 28 x (7168 + 4608) fewer.
QWEN7B_LINEAR = 28 * 233_057_792 - 28 * (7168 + 4608)

# ---- hand-computed: DeepSeek-V3 (MLA + 256-expert MoE, 3 dense layers, 1 MTP layer) ---------
# attention/layer: q_a 7168x1536 + q_b 1536x24576 + kv_a 7168x576 + kv_b 512x32768 + o 16384x7168
V3_ATTN = 11_010_048 + 37_748_736 + 4_128_768 + 16_777_216 + 117_440_512  # 187,105,280
V3_DENSE_MLP = 3 * 7168 * 18432  # 396,361,728
V3_EXPERT = 3 * 7168 * 2048  # 44,040,192 (one routed or shared expert)
V3_ROUTER = 256 * 7168 + 256  # gate + e_score_correction_bias
V3_NORMS = 1536 + 512 + 2 * 7168  # q_a, kv_a, input, post-attention
V3_EMBED = 129280 * 7168  # 926,679,040 (embed and head each)
V3_LINEAR = 61 * V3_ATTN + 3 * V3_DENSE_MLP + 58 * 257 * V3_EXPERT
V3_PARAMS = V3_LINEAR + 61 * V3_NORMS + 58 * V3_ROUTER + 2 * V3_EMBED + 7168
V3_ACTIVE = V3_PARAMS - 58 * (256 - 8) * V3_EXPERT
# fp8 scales: one float32 per 128x128 block of each Linear weight.
V3_BLOCKS_ATTN = 12 * 56 + 192 * 12 + 5 * 56 + 256 * 4 + 56 * 128  # 11,448
V3_BLOCKS_DENSE = 3 * 144 * 56
V3_BLOCKS_EXPERT = 3 * 16 * 56
V3_SCALES = 4 * (61 * V3_BLOCKS_ATTN + 3 * V3_BLOCKS_DENSE + 58 * 257 * V3_BLOCKS_EXPERT)
V3_FP8_WEIGHTS = V3_LINEAR + V3_SCALES + 2 * (V3_PARAMS - V3_LINEAR)
V3_KV_PER_TOKEN = 61 * (512 + 64) * 2


def test_hand_computed_values_match_the_published_sizes():
    # The hand formulas above reproduce the sizes the model cards state.
    assert round(QWEN7B_PARAMS / 1e9, 2) == 7.62
    assert round(V3_PARAMS / 1e9) == 671 and round(V3_ACTIVE / 1e9, 1) == 37.6


def test_qwen_7b_bf16():
    p = plan("DeepSeek-R1-Distill-Qwen-7B")
    assert (p.quant, p.context, p.concurrency, p.max_context) == ("bf16", 4096, 1, 131072)
    assert p.params == p.active_params == QWEN7B_PARAMS == 7_615_616_512
    assert p.weight_bytes == 2 * QWEN7B_PARAMS
    assert p.kv_bytes_per_token == QWEN7B_KV_PER_TOKEN == 57_344
    assert p.kv_bytes_per_token_uncompressed is None
    assert p.kv_bytes == 57_344 * 4096
    assert p.total_bytes == 2 * QWEN7B_PARAMS + 57_344 * 4096
    assert p.disk_bytes == 2 * QWEN7B_PARAMS  # published in bf16
    assert p.ram_bytes == p.total_bytes + 4 * 1024**3
    assert {fit.name: fit.count for fit in p.accelerators}["RTX 4090 24GB"] == 1


def test_qwen_7b_int4_and_a_long_busy_workload():
    p = plan("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", quant="int4", context=32768, concurrency=16)
    # 4 bits plus one fp16 scale per 128 weights = 0.515625 bytes per Linear weight.
    assert p.weight_bytes == QWEN7B_LINEAR * 33 // 64 + 2 * (QWEN7B_PARAMS - QWEN7B_LINEAR)
    assert p.kv_bytes == 57_344 * 32768 * 16  # 28 GiB: the KV now outweighs the weights
    fits = {fit.name: fit for fit in p.accelerators}
    # (5,545,257,984 + 30,064,771,072) / (0.9 x 24,564 MiB) = 1.54 -> 2 RTX 4090s
    assert fits["RTX 4090 24GB"].count == 2
    assert fits["H100 80GB"].count == 1


def test_deepseek_v3_fp8():
    p = plan("deepseek-v3", quant="fp8")
    assert p.params == V3_PARAMS == 671_026_419_200
    assert p.active_params == V3_ACTIVE == 37_552_297_472
    assert p.weight_bytes == V3_FP8_WEIGHTS == 673_150_582_112
    assert p.kv_bytes_per_token == V3_KV_PER_TOKEN == 70_272
    assert p.kv_bytes_per_token_uncompressed == 61 * 128 * (128 + 64 + 128) * 2
    total = V3_FP8_WEIGHTS + 70_272 * 4096
    assert p.total_bytes == total
    fits = {fit.name: (fit.count, fit.tensor_parallel, fit.nodes) for fit in p.accelerators}
    # total / (0.9 x memory as reported): H200 143,771 MiB -> 4.96; H100 81,559 MiB -> 8.75
    assert fits["H200 141GB"] == (5, 8, 1)
    assert fits["H100 80GB"] == (9, 16, 2)
    assert fits["RTX 4090 24GB"] == (30, 32, 4)
    assert fits["Ascend 910B 64GB"] == (11, 16, 2)


def test_deepseek_r1_is_v3_and_its_disk_counts_the_mtp_layer():
    p = plan("deepseek-ai/DeepSeek-R1", quant="bf16")
    assert p.architecture == "DeepseekV3ForCausalLM"
    assert p.weight_bytes == 2 * V3_PARAMS
    # Disk: the fp8 checkpoint plus its MTP layer (one MoE layer, eh_proj 7168 x 14336,
    # three norms, its own embed and head), 688.5 GB in all as on the Hub.
    mtp_linear = V3_ATTN + 257 * V3_EXPERT + 7168 * 14336
    mtp_blocks = V3_BLOCKS_ATTN + 257 * V3_BLOCKS_EXPERT + 56 * 112
    mtp_other = V3_NORMS + V3_ROUTER + 3 * 7168 + 2 * V3_EMBED
    assert p.disk_bytes == V3_FP8_WEIGHTS + mtp_linear + 4 * mtp_blocks + 2 * mtp_other
    assert round(p.disk_bytes / 1e9, 1) == 688.5


def test_mla_kv_is_small_for_the_workload():
    p = plan("DeepSeek-V2-Lite", context=32768, concurrency=8)
    assert p.kv_bytes_per_token == 27 * (512 + 64) * 2
    assert p.kv_bytes_per_token_uncompressed == 27 * 16 * (128 + 64 + 128) * 2
    assert p.kv_bytes == 27 * 576 * 2 * 32768 * 8
    assert round(p.params / 1e9, 1) == 15.7


@pytest.mark.parametrize("name", known_models())
def test_every_shipped_model_plans_and_formats(name):
    p = plan(name)
    text = format_plan(p)
    assert name in text and "H200 141GB" in text and "Ascend 910B 64GB" in text
    assert ("MLA latent" in text) == (p.kv_bytes_per_token_uncompressed is not None)
    assert json.loads(json.dumps(p.to_dict()))["params"] == p.params


def _numel_on_disk(model_dir) -> int:
    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                total += math.prod(f.get_slice(key).get_shape())
    return total


def test_plan_counts_exactly_the_tensors_of_a_real_deepseek_checkpoint(tmp_path):
    """A saved transformers DeepSeek-V3: the plan's inventory equals the checkpoint, tensor for tensor."""
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    config = DeepseekV3Config(
        vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, n_routed_experts=8, n_shared_experts=2,
        num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12, n_group=2, topk_group=1,
        num_nextn_predict_layers=0,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    p = plan(str(tmp_path), quant="fp32", context=8)
    assert p.params == _numel_on_disk(tmp_path)
    assert p.kv_bytes_per_token == 3 * (16 + 4) * 4  # fp32 cache


def test_plan_counts_exactly_the_tensors_of_a_real_qwen2_checkpoint(tmp_path):
    from tiny_models import make_tiny_model

    model_dir = make_tiny_model(tmp_path, "qwen2", with_tokenizer=False)
    p = plan(str(model_dir / "config.json"), context=512)  # a config.json path works too
    assert p.params == _numel_on_disk(model_dir)
    assert p.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2  # layers x (K, V) x kv heads x 16 x bf16


def test_bad_input_is_named(tmp_path):
    with pytest.raises(NotFoundError, match="'no-such-model'.*DeepSeek-V3"):
        plan("no-such-model")
    with pytest.raises(InvalidRequestError, match="'q3'"):
        plan("deepseek-v3", quant="q3")
    with pytest.raises(InvalidRequestError, match="context 200000 exceeds"):
        plan("deepseek-v3", context=200_000)
    with pytest.raises(InvalidRequestError, match="concurrency"):
        plan("deepseek-v3", concurrency=0)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    with pytest.raises(UnsupportedModelError, match="MambaForCausalLM"):
        plan(str(tmp_path))


def test_plan_counts_exactly_the_tensors_of_a_real_gemma3_checkpoint(tmp_path):
    from tiny_gemma3 import make_tiny_gemma3

    model_dir = make_tiny_gemma3(tmp_path)  # tied embeddings, q/k norms, four norms per layer
    p = plan(str(model_dir), quant="fp32", context=8)
    assert p.architecture == "Gemma3ForCausalLM"
    assert p.params == _numel_on_disk(model_dir)


def test_sliding_window_layers_hold_only_their_window():
    """The demo model: 15 local layers (window 512) and 3 global ones, 1 KiB per token and
    layer. At 8k tokens a local layer holds 33 blocks of 16 = 528 tokens, the bound the engine
    keeps; benchmarks/kv_window.py measured 31.8 MiB held for one such sequence."""
    p = plan("gemma-3-270m", context=8192, concurrency=2)
    assert (p.sliding_window, p.window_layers) == (512, 15)
    assert p.kv_bytes_per_token == 18 * 1024
    assert p.kv_bytes == 2 * 1024 * (3 * 8192 + 15 * 528)
    assert "15 layers attend to 512 tokens and hold at most 528" in format_plan(p)
    short = plan("gemma-3-270m", context=256)  # inside every window: no saving
    assert short.kv_bytes == 18 * 1024 * 256


def test_only_layers_the_config_makes_slide_are_windowed(tmp_path):
    config = {
        "architectures": ["MistralForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "sliding_window": 100,
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    mistral = plan(str(path), context=1000)
    assert (mistral.sliding_window, mistral.window_layers) == (100, 4)  # every layer
    assert mistral.kv_bytes == mistral.kv_bytes_per_token * 128  # 7 blocks of 16 span 100, +1
    # Qwen2's configs name a window they do not use (use_sliding_window: false).
    qwen = plan("DeepSeek-R1-Distill-Qwen-7B", context=8192)
    assert (qwen.sliding_window, qwen.window_layers) == (None, 0)
    assert qwen.kv_bytes == qwen.kv_bytes_per_token * 8192
