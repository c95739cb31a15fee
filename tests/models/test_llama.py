"""Llama / Qwen2 / Mistral through the paged runner agree with transformers on the same weights."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHS, load_reference, make_tiny_model

from localseek.engine.runner import ModelRunner
from localseek.engine.scheduler import ScheduledSeq as Step
from localseek.engine.sequence import Sequence
from localseek.errors import ModelLoadError, UnsupportedModelError
from localseek.models.llama import LlamaForCausalLM
from localseek.models.registry import resolve_model_class, supported_architectures
from localseek.sampling_params import SamplingParams
from localseek.weights.hf import HFWeights, read_hf_config, safetensors_files

BLOCK_SIZE = 4


def load_ours(model_dir, dtype=torch.float32) -> torch.nn.Module:
    config = read_hf_config(model_dir)
    model = resolve_model_class(config)(config, dtype, torch.device("cpu"))
    model.load_weights(iter(HFWeights(safetensors_files(model_dir))))
    return model.eval()


def prompt_logits(model, token_ids: list[int], dtype=torch.float32) -> torch.Tensor:
    """Logits of every prompt position, computed in one pass through the paged cache."""
    runner = ModelRunner(model, BLOCK_SIZE, num_blocks=32, device="cpu", dtype=dtype)
    seq = Sequence("r", token_ids, SamplingParams())
    # Blocks out of order, so a block-table bug cannot pass by accident.
    seq.block_table = [31 - 2 * i for i in range(-(-len(token_ids) // BLOCK_SIZE))]
    batch = runner.prepare([Step(seq, len(token_ids))])
    with torch.inference_mode():
        hidden = model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
        return model.compute_logits(hidden)


def reference_logits(model_dir, token_ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return load_reference(model_dir)(torch.tensor([token_ids])).logits[0].float()


PROMPT = [(i * 37 + 11) % 500 for i in range(29)]


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_logits_match_transformers(tmp_path, arch):
    model_dir = make_tiny_model(tmp_path, arch)
    ours = prompt_logits(load_ours(model_dir), PROMPT)
    ref = reference_logits(model_dir, PROMPT)
    assert ours.dtype == torch.float32
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_sliding_window_matches_transformers(tmp_path):
    model_dir = make_tiny_model(tmp_path, "mistral", sliding_window=5)
    model = load_ours(model_dir)
    assert [spec.sliding_window for spec in model.kv_cache_specs()] == [5, 5]
    ours = prompt_logits(model, PROMPT)
    ref = reference_logits(model_dir, PROMPT)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # The window matters: the same weights without it give different logits.
    full = prompt_logits(load_ours(make_tiny_model(tmp_path / "full", "mistral")), PROMPT)
    assert (full[-1] - ours[-1]).abs().max() > 1e-2


def test_bfloat16_stays_close_to_float32(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama3")
    fp32 = prompt_logits(load_ours(model_dir), PROMPT)
    bf16 = prompt_logits(load_ours(model_dir, torch.bfloat16), PROMPT, torch.bfloat16)
    assert bf16.dtype == torch.float32  # compute_logits always hands fp32 to the sampler
    assert (bf16 - fp32).abs().max() < 0.1 * fp32.abs().max()


def test_tied_embeddings_share_one_tensor(tmp_path):
    model = load_ours(make_tiny_model(tmp_path, "llama-tied"))
    assert model.lm_head.weight is model.model.embed_tokens.weight


def _weights(model_dir) -> list[tuple[str, torch.Tensor]]:
    return list(HFWeights(safetensors_files(model_dir)))


def test_unknown_weight_is_named(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama")
    config = read_hf_config(model_dir)
    extra = ("model.layers.0.self_attn.mystery.weight", torch.zeros(2))
    with pytest.raises(ModelLoadError, match=r"model\.layers\.0\.self_attn\.mystery\.weight"):
        LlamaForCausalLM(config, torch.float32).load_weights(_weights(model_dir) + [extra])


def test_missing_weight_is_named(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama")
    config = read_hf_config(model_dir)
    weights = [(n, t) for n, t in _weights(model_dir) if "layers.1.self_attn.k_proj" not in n]
    with pytest.raises(ModelLoadError, match=r"lacks .*model\.layers\.1\.self_attn\.qkv_proj"):
        LlamaForCausalLM(config, torch.float32).load_weights(weights)


def test_wrong_shape_is_named(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama")
    config = dict(read_hf_config(model_dir), intermediate_size=96)
    with pytest.raises(ModelLoadError, match=r"mlp\..* has shape .*128.* expects .*96"):
        LlamaForCausalLM(config, torch.float32).load_weights(_weights(model_dir))


def test_qwen2_has_qkv_bias_and_no_o_bias(tmp_path):
    model = load_ours(make_tiny_model(tmp_path, "qwen2"))
    attn = model.model.layers[0].self_attn
    assert attn.qkv_proj.bias is not None and attn.o_proj.bias is None


def test_registry_names_unsupported_architecture():
    with pytest.raises(UnsupportedModelError, match="FancyNewForCausalLM") as info:
        resolve_model_class({"architectures": ["FancyNewForCausalLM"]})
    assert "LlamaForCausalLM" in str(info.value)  # and lists what is supported
    with pytest.raises(UnsupportedModelError, match="architectures"):
        resolve_model_class({"model_type": "llama"})


def test_registry_resolves_the_llama_family():
    from localseek.models.llama import MistralForCausalLM, Qwen2ForCausalLM

    assert resolve_model_class({"architectures": ["Qwen2ForCausalLM"]}) is Qwen2ForCausalLM
    assert resolve_model_class({"architectures": ["MistralForCausalLM"]}) is MistralForCausalLM
    assert {"DeepseekV3ForCausalLM", "Gemma3ForCausalLM"} <= set(supported_architectures())


def test_unknown_rope_type_is_named(tmp_path):
    config = read_hf_config(make_tiny_model(tmp_path, "llama"))
    config["rope_parameters"] = {"rope_type": "wobbly", "rope_theta": 10000.0}
    with pytest.raises(UnsupportedModelError, match="wobbly"):
        LlamaForCausalLM(config, torch.float32)


# ---- the paged attention reference against dense attention ------------------------------------


def _dense_attention(q, k, v, context_len, scale, window, soft_cap):
    """q [ql, hq, d] at the last ql positions of k/v [ctx, hkv, d]: the textbook formula."""
    query_len, q_heads = q.shape[:2]
    group = q_heads // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    if soft_cap is not None:
        scores = soft_cap * torch.tanh(scores / soft_cap)
    q_pos = torch.arange(context_len - query_len, context_len)[:, None]
    k_pos = torch.arange(context_len)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


@pytest.mark.parametrize("window,soft_cap", [(None, None), (5, None), (None, 2.0), (3, 1.5)])
@pytest.mark.parametrize("decode_only", [False, True])
@pytest.mark.parametrize("group_bytes", [1 << 62, 1, 3072])  # one group, one per row, mixed
@pytest.mark.parametrize("decode_path", ["torch", "native"])
def test_paged_attention_matches_dense(
    window, soft_cap, decode_only, group_bytes, decode_path, monkeypatch
):
    """Decode rows take the native kernel (kernels/) where it is built and the torch groups
    otherwise; both must give the dense result, around prefill rows too."""
    import localseek.models.attention as attention
    from localseek.models.attention import (
        AttentionMetadata,
        AttentionWorkspace,
        paged_attention,
        write_kv,
    )

    native_calls = []
    if decode_path == "torch":
        monkeypatch.setattr(attention, "decode_attention_kernel", lambda: None)
    else:
        kernel = attention.decode_attention_kernel()
        if kernel is None:
            pytest.skip("the native kernel is not available on this machine")

        def spy(*args, **kwargs):
            native_calls.append(args[0].shape)
            return kernel(*args, **kwargs)

        spy.handles = kernel.handles
        monkeypatch.setattr(attention, "decode_attention_kernel", lambda: spy)
    gen = torch.Generator().manual_seed(0)
    block_size, num_blocks, q_heads, kv_heads = 4, 40, 6, 2
    dim = 32 if decode_path == "native" else 8  # the kernel takes multiples of 16
    # (context_len, query_len) per sequence: decodes, a fresh prefill, a chunk over a cache.
    shapes = (
        [(9, 1), (1, 1), (17, 1), (6, 1)]
        if decode_only
        else [(9, 1), (7, 7), (17, 5), (12, 1), (3, 1)]
    )
    k_cache = torch.zeros(num_blocks, block_size, kv_heads, dim)
    v_cache = torch.zeros(num_blocks, block_size, kv_heads, dim)
    free = torch.randperm(num_blocks, generator=gen).tolist()
    tables, queries, expected = [], [], []
    for context_len, query_len in shapes:
        table = [free.pop() for _ in range(-(-context_len // block_size))]
        k = torch.randn(context_len, kv_heads, dim, generator=gen)
        v = torch.randn(context_len, kv_heads, dim, generator=gen)
        slots = torch.tensor(
            [table[p // block_size] * block_size + p % block_size for p in range(context_len)]
        )
        write_kv(k_cache, k, slots)
        write_kv(v_cache, v, slots)
        q = torch.randn(query_len, q_heads, dim, generator=gen)
        tables.append(table)
        queries.append(q)
        expected.append(_dense_attention(q, k, v, context_len, 0.3, window, soft_cap))
    width = max(len(t) for t in tables)
    query_lens = [ql for _, ql in shapes]
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.int64),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        context_lens=torch.tensor([c for c, _ in shapes], dtype=torch.int32),
        query_start_loc=torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()]),
        query_lens_list=query_lens,
        context_lens_list=[c for c, _ in shapes],
        block_size=block_size,
        max_context_len=max(c for c, _ in shapes),
        is_decode_only=decode_only,
        workspace=AttentionWorkspace(),
        decode_group_bytes=group_bytes,
    )
    out = paged_attention(
        torch.cat(queries),
        k_cache,
        v_cache,
        meta,
        scale=0.3,
        sliding_window=window,
        soft_cap=soft_cap,
    )
    torch.testing.assert_close(out, torch.cat(expected), atol=1e-5, rtol=1e-5)
    # The kernel takes every decode row unless scores are soft-capped (torch path then).
    assert bool(native_calls) == (decode_path == "native" and soft_cap is None)


def test_old_and_new_rope_config_styles_agree():
    from localseek.models.layers import build_rotary, rope_parameters

    scaling = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    old = {"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", **scaling}}
    new = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, **scaling}}
    plain = {"rope_theta": 500000.0}
    old_freq = build_rotary(rope_parameters(old), 128, 131072).inv_freq
    new_freq = build_rotary(rope_parameters(new), 128, 131072).inv_freq
    plain_freq = build_rotary(rope_parameters(plain), 128, 131072).inv_freq
    assert torch.equal(old_freq, new_freq)
    assert torch.equal(old_freq[:16], plain_freq[:16])  # short wavelengths untouched
    assert torch.allclose(old_freq[-8:], plain_freq[-8:] / 8)  # long ones slowed by the factor
    legacy_linear = rope_parameters({"rope_scaling": {"type": "linear", "factor": 2.0}})
    assert legacy_linear["rope_type"] == "linear" and legacy_linear["rope_theta"] == 10000.0
