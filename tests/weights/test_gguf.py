"""GGUF files written from tiny HF checkpoints load into the same model as the checkpoints."""

from __future__ import annotations

import logging

import gguf
import numpy as np
import pytest
import torch
from tiny_gemma3 import make_tiny_gemma3
from tiny_gguf import write_tiny_gguf
from tiny_models import make_tiny_model

from localseek.engine.runner import ModelRunner
from localseek.engine.sequence import Sequence
from localseek.models.registry import resolve_model_class
from localseek.sampling_params import SamplingParams
from localseek.weights.gguf import open_gguf
from localseek.weights.hf import open_hf_dir
from localseek.weights.loader import open_model

BLOCK_SIZE = 4
PROMPT = [(i * 37 + 11) % 440 for i in range(29)]
MIXED_TEXT = (
    "Hello, 世界! 🤖🚀 def add(a, b):\n    return a + b  # 求和\n<think>ok</think> <|user|>hi"
)


class Step:
    def __init__(self, seq: Sequence, num_new_tokens: int):
        self.seq, self.num_new_tokens = seq, num_new_tokens


def build(source) -> torch.nn.Module:
    model = resolve_model_class(source.config)(source.config, torch.float32, torch.device("cpu"))
    model.load_weights(source.weights())
    return model.eval()


def prompt_logits(model, token_ids: list[int]) -> torch.Tensor:
    runner = ModelRunner(model, BLOCK_SIZE, num_blocks=32, device="cpu", dtype=torch.float32)
    seq = Sequence("r", token_ids, SamplingParams())
    seq.block_table = [31 - 2 * i for i in range(-(-len(token_ids) // BLOCK_SIZE))]
    batch = runner.prepare([Step(seq, len(token_ids))])
    with torch.inference_mode():
        return model.compute_logits(
            model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
        )


def make_dir(tmp_path, arch: str):
    if arch == "gemma3":
        # GGUF has no field for Gemma's query scale: llama.cpp uses 1/sqrt(head_dim), as the
        # released sizes but 27B do.
        return make_tiny_gemma3(tmp_path, query_pre_attn_scalar=16)
    return make_tiny_model(tmp_path, arch)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f32_gguf_gives_the_safetensors_logits(tmp_path, arch):
    model_dir = make_dir(tmp_path, arch)
    path = write_tiny_gguf(model_dir, tmp_path / f"{arch}.gguf", arch)
    source = open_model(str(path))  # dispatches on the .gguf suffix
    assert source.format == "gguf"
    reference = open_hf_dir(model_dir)
    for key in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size"):
        assert source.config[key] == reference.config[key]
    ours = prompt_logits(build(source), PROMPT)
    torch.testing.assert_close(ours, prompt_logits(build(reference), PROMPT), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_generation_equals_the_safetensors_path(tmp_path, arch):
    from localseek import LLM, SamplingParams

    model_dir = make_tiny_model(tmp_path, arch)
    path = write_tiny_gguf(model_dir, tmp_path / f"{arch}.gguf", arch)
    params = SamplingParams(temperature=0, max_tokens=12)
    prompts = [[5, 17, 33, 2, 9], MIXED_TEXT]
    outputs = []
    for model in (str(model_dir), str(path)):
        llm = LLM(model, dtype="float32", device="cpu", kv_cache_tokens=256, show_progress=False)
        outputs.append([(o.token_ids, o.text) for o in llm.generate(prompts, params)])
    assert outputs[0] == outputs[1]


def test_llama_rows_are_unpermuted(tmp_path):
    # llama.cpp reorders llama q/k rows; loaded tensors must equal the HF ones again.
    model_dir = make_tiny_model(tmp_path, "llama")
    source = open_gguf(write_tiny_gguf(model_dir, tmp_path / "l.gguf", "llama"))
    ours = dict(source.weights())
    for name, tensor in open_hf_dir(model_dir).weights():
        if "k_proj" in name or "q_proj" in name:
            torch.testing.assert_close(ours[name], tensor, atol=0, rtol=0)


def test_llama3_rope_scaling_is_rebuilt_from_rope_freqs(tmp_path):
    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    }
    model_dir = make_tiny_model(
        tmp_path, "llama", rope_parameters=rope, max_position_embeddings=16384
    )
    from localseek.models.layers import build_rotary, rope_parameters

    inv = build_rotary(rope_parameters(open_hf_dir(model_dir).config), 16, 16384).inv_freq
    base = 1.0 / 500000.0 ** (torch.arange(0, 16, 2).float() / 16)
    divisors = (base / inv).numpy().astype(np.float32)  # what llama.cpp stores
    path = tmp_path / "l3.gguf"
    write_tiny_gguf(model_dir, path, "llama", extra_tensors={"rope_freqs.weight": divisors})
    source = open_gguf(path)
    assert source.config["rope_scaling"]["rope_type"] == "llama3"
    assert source.config["rope_scaling"]["factor"] == pytest.approx(8.0)
    torch.testing.assert_close(
        prompt_logits(build(source), PROMPT),
        prompt_logits(build(open_hf_dir(model_dir)), PROMPT),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_quantized_tensors_dequantize_in_place(tmp_path, qtype):
    model_dir = make_tiny_model(tmp_path, "qwen2")
    source = open_gguf(write_tiny_gguf(model_dir, tmp_path / "q.gguf", "qwen2", tensor_type=qtype))
    assert qtype in source.extra["tensor_types"]
    ours = dict(source.weights())
    t = gguf.GGMLQuantizationType[qtype]
    for name, tensor in open_hf_dir(model_dir).weights():
        expected = tensor
        if tensor.dim() == 2:  # what the file holds: the quantize -> dequantize round trip
            stored = gguf.quants.quantize(tensor.numpy(), t) if qtype != "F16" else None
            expected = (
                tensor.half().float()
                if qtype == "F16"
                else torch.from_numpy(gguf.quants.dequantize(stored, t))
            )
        torch.testing.assert_close(ours[name].float(), expected.float(), atol=0, rtol=0)
        error = (ours[name].float() - tensor).abs().max() / tensor.abs().max()
        assert error < 0.1, (name, float(error))  # and it is still the same weight


@pytest.mark.parametrize(
    "qtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
)
def test_every_block_type_dequantizes_as_the_gguf_package(tmp_path, qtype):
    # Random blocks (the gguf package cannot quantize k-quants) through a real file; the
    # reference is the gguf package's numpy dequantizer. The demo file checks Q4_K/Q6_K/Q5_0/
    # Q8_0 numerics end to end against transformers.
    t = gguf.GGMLQuantizationType[qtype]
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[t]
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(3, 4 * block_bytes), dtype=np.uint8)
    raw[:, 1::2] &= 0xBF  # every f16 scale sits at an even offset: keep its exponent finite
    path = tmp_path / "k.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.ffn_up.weight", raw, raw_shape=raw.shape, raw_dtype=t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from localseek.weights.gguf_file import GGUFFile
    from localseek.weights.gguf_tensors import dequantized

    file = GGUFFile(path)
    (info,) = file.tensors
    assert info.shape == (3, 4 * block_elems) and info.type_name == qtype
    ours = dequantized(file, info)
    assert ours.dtype == torch.float32 and ours.shape == (3, 4 * block_elems)
    expected = torch.from_numpy(gguf.quants.dequantize(raw, t))
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_tokenizer_from_metadata_matches_the_original(tmp_path):
    from localseek.weights.tokenizer import Tokenizer

    model_dir = make_tiny_model(tmp_path, "qwen2")
    ours = open_gguf(write_tiny_gguf(model_dir, tmp_path / "t.gguf", "qwen2")).tokenizer
    original = Tokenizer.from_pretrained_dir(model_dir)
    for text in (MIXED_TEXT, "  two  spaces\n\n", "🤖" * 3 + "中文", ""):
        ids = ours.encode(text)
        assert ids == original.encode(text)
        assert ours.encode(text, add_special_tokens=False) == original.encode(text, False)
        for skip in (True, False):
            assert ours.decode(ids, skip) == original.decode(ids, skip)
    assert ours.bos_token_id == original.bos_token_id
    assert ours.eos_token_ids == original.eos_token_ids
    assert ours.chat_template == original.chat_template
    messages = [{"role": "user", "content": "hi"}]
    assert ours.apply_chat_template(messages) == original.apply_chat_template(messages)


def test_deepseek_qwen_tokenizer_keeps_special_tokens_whole(tmp_path):
    """A DeepSeek-R1-Distill-Qwen-style vocabulary: Qwen2's split (digits one by one) and
    special tokens written with full-width bars, which must stay single tokens."""
    from tokenizers import AddedToken, Regex, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    from localseek.weights.tokenizer import Tokenizer

    model_dir = make_tiny_model(tmp_path, "qwen2")
    tok = HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
    eos = "<\uff5cend\u2581of\u2581sentence\uff5c>"
    tok.add_special_tokens([AddedToken(eos, special=True, normalized=False)])
    split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.save(str(model_dir / "tokenizer.json"))
    path = write_tiny_gguf(
        model_dir, tmp_path / "r1.gguf", "qwen2", pre_tokenizer="deepseek-r1-qwen"
    )
    ours = open_gguf(path).tokenizer
    original = Tokenizer.from_pretrained_dir(model_dir)
    text = f"Numbers 12345 and 2024 中文{eos}after"
    ids = ours.encode(text)
    assert ids == original.encode(text)
    assert ours.token_to_id(eos) in ids  # one token, with its file id
    assert ours.decode(ids, skip_special_tokens=True) == original.decode(ids, True)


def test_missing_chat_template_uses_the_architecture_turn_format(tmp_path, caplog):
    model_dir = make_tiny_gemma3(tmp_path)
    path = write_tiny_gguf(model_dir, tmp_path / "g.gguf", "gemma3", chat_template=False)
    with caplog.at_level(logging.INFO, logger="localseek"):
        tokenizer = open_gguf(path).tokenizer
    assert "no chat template" in caplog.text and "Gemma" in caplog.text
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert text == "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"

    qwen_dir = make_tiny_model(tmp_path, "qwen2")
    qwen = open_gguf(write_tiny_gguf(qwen_dir, tmp_path / "q.gguf", "qwen2", chat_template=False))
    assert qwen.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
