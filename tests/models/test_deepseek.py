"""DeepSeek-V2/V3 (MLA + MoE) through the paged latent cache agree with transformers on the same weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tiny_deepseek import BASE, TINY, YARN, make_tiny_deepseek

from localseek.engine.runner import ModelRunner, kv_bytes_per_token
from localseek.engine.sequence import Sequence
from localseek.errors import ModelLoadError, UnsupportedModelError
from localseek.models.deepseek import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM
from localseek.models.deepseek_weights import dequantize_fp8_blocks
from localseek.models.registry import resolve_model_class
from localseek.models.rope_yarn import yarn_freqs, yarn_softmax_scale
from localseek.sampling_params import SamplingParams
from localseek.weights.hf import HFWeights, read_hf_config, safetensors_files

BLOCK_SIZE = 4
DATA = Path(__file__).parents[2] / "src" / "localseek" / "ops" / "data"


class Step:
    """What the runner reads from the scheduler's ScheduledSeq."""

    def __init__(self, seq: Sequence, num_new_tokens: int):
        self.seq, self.num_new_tokens = seq, num_new_tokens


def load_ours(model_dir: Path, dtype=torch.float32) -> torch.nn.Module:
    config = read_hf_config(model_dir)
    model = resolve_model_class(config)(config, dtype, torch.device("cpu"))
    model.load_weights(iter(HFWeights(safetensors_files(model_dir))))
    return model.eval()


def reference_logits(model_dir: Path, token_ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.inference_mode():
        return ref(torch.tensor([token_ids])).logits[0].float()


def run_steps(runner: ModelRunner, steps: list[Step]) -> torch.Tensor:
    """One forward over `steps`; advances num_computed_tokens; logits of every row [T, vocab]."""
    batch = runner.prepare(steps)
    with torch.inference_mode():
        hidden = runner.model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
        logits = runner.model.compute_logits(hidden)
    for step in steps:
        step.seq.num_computed_tokens += step.num_new_tokens
    return logits


def new_seq(request_id: str, token_ids: list[int], first_block: int) -> Sequence:
    seq = Sequence(request_id, list(token_ids), SamplingParams())
    # Blocks out of order and interleaved between sequences, so a table bug cannot pass.
    seq.block_table = [first_block - 2 * i for i in range(-(-len(token_ids) // BLOCK_SIZE))]
    return seq


PROMPT = [(i * 37 + 11) % 256 for i in range(23)]


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny(request, tmp_path_factory):
    """(name, checkpoint dir, reference logits of PROMPT)."""
    model_dir = make_tiny_deepseek(tmp_path_factory.mktemp("ds"), request.param)
    return request.param, model_dir, reference_logits(model_dir, PROMPT)


def test_prefill_logits_match_transformers(tiny):
    _, model_dir, ref = tiny
    runner = ModelRunner(load_ours(model_dir), BLOCK_SIZE, 32, "cpu", torch.float32)
    seq = new_seq("a", PROMPT, 31)
    ours = run_steps(runner, [Step(seq, len(PROMPT))])
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_chunked_prefill_then_decode_match_transformers(tiny):
    """Chunks over cached context (decompressed path), then one-token steps (absorbed path)."""
    _, model_dir, ref = tiny
    runner = ModelRunner(load_ours(model_dir), BLOCK_SIZE, 32, "cpu", torch.float32)
    seq = new_seq("a", PROMPT, 31)
    got = [run_steps(runner, [Step(seq, 9)]), run_steps(runner, [Step(seq, 6)])]
    while seq.num_computed_tokens < len(PROMPT):  # 8 decode steps across block boundaries
        got.append(run_steps(runner, [Step(seq, 1)]))
    torch.testing.assert_close(torch.cat(got), ref, atol=1e-4, rtol=1e-4)


def test_mixed_batch_matches_transformers(tiny):
    """Decoding sequences and a prefill chunk in one step, then a decode-only batch."""
    _, model_dir, ref = tiny
    runner = ModelRunner(load_ours(model_dir), BLOCK_SIZE, 40, "cpu", torch.float32)
    a, b, c = new_seq("a", PROMPT, 39), new_seq("b", PROMPT, 38), new_seq("c", PROMPT[:13], 25)
    run_steps(runner, [Step(a, 13), Step(c, 12)])
    # a and c decode (contexts 14, 13), b prefills 10 tokens: one mixed step.
    mixed = run_steps(runner, [Step(a, 1), Step(b, 10), Step(c, 1)])
    torch.testing.assert_close(mixed[0], ref[13], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[1:11], ref[:10], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[11], ref[12], atol=1e-4, rtol=1e-4)
    decode = run_steps(runner, [Step(a, 1), Step(b, 1)])  # contexts 15 and 11
    torch.testing.assert_close(decode, ref[[14, 10]], atol=1e-4, rtol=1e-4)


def test_bfloat16_stays_close_to_float32(tiny):
    _, model_dir, ref = tiny
    runner = ModelRunner(
        load_ours(model_dir, torch.bfloat16), BLOCK_SIZE, 32, "cpu", torch.bfloat16
    )
    seq = new_seq("a", PROMPT, 31)
    got = [run_steps(runner, [Step(seq, 15)])]
    while seq.num_computed_tokens < len(PROMPT):
        got.append(run_steps(runner, [Step(seq, 1)]))
    bf16 = torch.cat(got)
    assert bf16.dtype == torch.float32  # compute_logits hands fp32 to the sampler
    # Mean, not max: a near-tied expert choice may flip under bfloat16 for a token or two.
    assert (bf16 - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_kv_cache_holds_only_the_latent(tiny):
    name, model_dir, _ = tiny
    model = load_ours(model_dir)
    args = model.args
    assert [spec.shapes for spec in model.kv_cache_specs()] == [((16 + 4,),)] * 3
    assert kv_bytes_per_token(model.kv_cache_specs(), torch.bfloat16) == 3 * 20 * 2
    assert model.uncompressed_kv_values_per_token() == 3 * 4 * (8 + 4 + 12)
    assert args.moe_layers == (False, True, True)  # first_k_dense_replace = 1


def _decode_step_ready(model_dir: Path):
    """A runner holding a prefilled 22-token context, and the 23rd token's step."""
    runner = ModelRunner(load_ours(model_dir), BLOCK_SIZE, 32, "cpu", torch.float32)
    seq = new_seq("a", PROMPT, 31)
    run_steps(runner, [Step(seq, len(PROMPT) - 1)])
    return runner, Step(seq, 1)


def test_decode_never_decompresses_the_cached_context(tmp_path):
    model_dir = make_tiny_deepseek(tmp_path, "v3")
    runner, step = _decode_step_ready(model_dir)
    calls = []
    for layer in runner.model.model.layers:
        layer.self_attn.kv_b_proj.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    run_steps(runner, [step])
    assert calls == []  # W_UK / W_UV are used as weights, never applied to cached latents
    # The prefill path does decompress: the hook would have caught the decode doing so.
    run_steps(runner, [Step(new_seq("b", PROMPT[:6], 10), 6)])
    assert calls and calls[0] == (6, 4 * (8 + 12))


def test_decode_allocates_nothing_of_full_kv_size(tmp_path):
    """Profiler memory record: no allocation during a decode step reaches the full K/V size."""
    model_dir = make_tiny_deepseek(tmp_path, "v3")
    runner, step = _decode_step_ready(model_dir)
    context, heads = len(PROMPT), 4
    full_kv_bytes = context * heads * (8 + 4 + 12) * 4  # what decompressing would allocate
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        run_steps(runner, [step])
    allocations = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    assert allocations, "the profiler recorded no allocations"
    assert max(allocations) < full_kv_bytes / 2, (max(allocations), full_kv_bytes)


def test_v3_published_config_kv_bytes_per_token():
    """DeepSeek-V3: 61 layers x (512 latent + 64 rotary) values, against ~4.9 MB of full K/V."""
    config = json.loads((DATA / "deepseek-v3.json").read_text())
    model = DeepseekV3ForCausalLM(config, torch.bfloat16, torch.device("meta"))
    assert ModelRunner.kv_bytes_per_token(model, torch.bfloat16) == 61 * (512 + 64) * 2
    assert model.uncompressed_kv_values_per_token() * 2 == 61 * 128 * (128 + 64 + 128) * 2
    assert model.max_model_len == 163840
    assert model.args.moe_layers == (False,) * 3 + (True,) * 58
    assert model.args.fp8_block == (128, 128) and model.args.num_mtp_layers == 1


def test_mtp_layers_are_skipped_with_a_log_line(tmp_path, caplog):
    model_dir = make_tiny_deepseek(tmp_path, "v3")
    config = dict(read_hf_config(model_dir), num_nextn_predict_layers=1)
    weights = list(HFWeights(safetensors_files(model_dir)))
    mtp = [(n.replace("layers.2.", "layers.3."), t) for n, t in weights if "layers.2." in n]
    mtp.append(("model.layers.3.eh_proj.weight", torch.zeros(64, 128)))
    model = DeepseekV3ForCausalLM(config, torch.float32)
    with caplog.at_level(logging.INFO, logger="localseek.models.deepseek_weights"):
        model.load_weights(weights + mtp)
    assert "multi-token-prediction" in caplog.text and f"skipped {len(mtp)} tensor" in caplog.text
    # Without num_nextn_predict_layers the same tensors are unknown, and named.
    with pytest.raises(ModelLoadError, match=r"model\.layers\.3\."):
        DeepseekV3ForCausalLM(read_hf_config(model_dir), torch.float32).load_weights(weights + mtp)


def _fp8_quantize(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = w.shape
    scale = torch.empty(-(-rows // block), -(-cols // block))
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            tile = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
            scale[i, j] = tile.abs().max() / 448.0
            q[i * block : (i + 1) * block, j * block : (j + 1) * block] = (tile / scale[i, j]).to(
                q.dtype
            )
    return q, scale


def test_fp8_block_dequantization_uses_each_blocks_scale():
    w = torch.randn(300, 200)
    w[:128, :128] *= 100.0  # one block far larger: a per-tensor scale would lose the rest
    q, scale = _fp8_quantize(w)
    assert scale.shape == (3, 2)
    out = dequantize_fp8_blocks(q, scale, (128, 128), torch.float32)
    assert out.shape == w.shape
    torch.testing.assert_close(out, w, rtol=0.07, atol=1e-3 * w.abs().max().item())
    with pytest.raises(ModelLoadError, match=r"\(3, 2\)"):
        dequantize_fp8_blocks(q, scale[:2], (128, 128), torch.float32)


def test_fp8_checkpoint_loads_dequantized(tmp_path):
    model_dir = make_tiny_deepseek(tmp_path, "v3")
    config = dict(read_hf_config(model_dir))
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    weights = list(HFWeights(safetensors_files(model_dir)))
    name = "model.layers.1.mlp.experts.3.down_proj.weight"
    fp8 = []
    for n, t in weights:
        if n == name or n.endswith("self_attn.kv_b_proj.weight"):
            q, scale = _fp8_quantize(t)
            fp8 += [(n + "_scale_inv", scale), (n, q)]  # scale first: order must not matter
        else:
            fp8.append((n, t))
    model = DeepseekV3ForCausalLM(config, torch.float32)
    model.load_weights(fp8)
    original = dict(weights)[name]
    loaded = model.model.layers[1].mlp.experts.w2[3]
    assert not torch.equal(loaded, original)  # really went through fp8
    torch.testing.assert_close(loaded, original, rtol=0.07, atol=0.01)
    missing_scale = [(n, t) for n, t in fp8 if not n.endswith("_scale_inv")]
    with pytest.raises(ModelLoadError, match="without their block scale"):
        DeepseekV3ForCausalLM(config, torch.float32).load_weights(missing_scale)


def test_yarn_matches_transformers():
    from transformers import DeepseekV3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(
        YARN, factor=40.0, original_max_position_embeddings=4096, mscale=0.707, mscale_all_dim=1.0
    )
    config = DeepseekV3Config(
        **dict(BASE, max_position_embeddings=163840, rope_parameters=params, qk_rope_head_dim=64)
    )
    ref_freq, ref_scale = ROPE_INIT_FUNCTIONS["yarn"](config)
    inv_freq, scale = yarn_freqs(config.rope_parameters, 64, 163840)
    torch.testing.assert_close(inv_freq, ref_freq.float())
    assert scale == pytest.approx(ref_scale)
    assert yarn_softmax_scale(params) == pytest.approx(
        (0.1 * 1.0 * torch.log(torch.tensor(40.0)).item() + 1) ** 2
    )
    assert yarn_softmax_scale({"rope_type": "default"}) == 1.0


def test_registry_resolves_deepseek():
    assert (
        resolve_model_class({"architectures": ["DeepseekV2ForCausalLM"]}) is DeepseekV2ForCausalLM
    )
    assert (
        resolve_model_class({"architectures": ["DeepseekV3ForCausalLM"]}) is DeepseekV3ForCausalLM
    )


def test_bad_routing_config_is_named():
    config = json.loads((DATA / "deepseek-v2-lite.json").read_text())
    with pytest.raises(UnsupportedModelError, match="'best_of_three'"):
        DeepseekV2ForCausalLM(dict(config, topk_method="best_of_three"), torch.float32, "meta")
    with pytest.raises(ModelLoadError, match="n_group 5"):
        DeepseekV2ForCausalLM(dict(config, n_group=5), torch.float32, "meta")
    with pytest.raises(ModelLoadError, match="'kv_lora_rank'"):
        DeepseekV2ForCausalLM(dict(config, kv_lora_rank=None), torch.float32, "meta")
