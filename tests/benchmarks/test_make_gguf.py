"""benchmarks/make_gguf.py writes an R1-distill-shaped GGUF that localseek loads and runs."""

from __future__ import annotations

import os
import shutil

import gguf
import make_gguf
import pytest

from localseek import LLM, SamplingParams
from localseek.weights.gguf_file import GGUFFile

BOS_ID, EOS_ID, USER_ID, THINK_ID = 151646, 151643, 151644, 151648


def test_presets_have_the_real_shapes():
    small, big = make_gguf.PRESETS["r1-1.5b"], make_gguf.PRESETS["r1-7b"]
    assert (small.layers, small.hidden, small.heads, small.kv_heads, small.ffn) == (
        28,
        1536,
        12,
        2,
        8960,
    )
    assert (big.layers, big.hidden, big.heads, big.kv_heads, big.ffn) == (28, 3584, 28, 4, 18944)
    assert small.vocab == big.vocab == 152064
    # Every matrix row must be a whole number of k-quant blocks (256) for Q4_K_M.
    for shape in (small, big):
        for _, dims in make_gguf.tensor_specs(shape):
            assert len(dims) == 1 or dims[1] % 256 == 0


def test_file_carries_the_qwen2_architecture_and_r1_vocabulary(tiny_r1_gguf):
    gf = GGUFFile(tiny_r1_gguf)
    md, tensors = gf.metadata, {t.name: t for t in gf.tensors}
    assert {"blk.1.attn_q.bias", "blk.1.attn_k.bias", "output.weight"} <= set(tensors)
    assert md["general.architecture"] == "qwen2" and md["qwen2.block_count"] == 2
    assert md["tokenizer.ggml.pre"] == "deepseek-r1-qwen"
    assert (md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"]) == (
        BOS_ID,
        EOS_ID,
    )
    tokens, types = md["tokenizer.ggml.tokens"], list(md["tokenizer.ggml.token_type"])
    assert len(tokens) == 152064 and tokens[USER_ID] == "<｜User｜>"
    assert (
        types[EOS_ID] == gguf.TokenType.CONTROL and types[THINK_ID] == gguf.TokenType.USER_DEFINED
    )
    assert tokens[-1] == "[PAD152063]" and types[-1] == gguf.TokenType.UNUSED
    embd = tensors["token_embd.weight"]
    assert embd.ggml_type == gguf.GGMLQuantizationType.F16 and embd.shape == (152064, 128)
    assert tensors["blk.0.attn_norm.weight"].ggml_type == gguf.GGMLQuantizationType.F32


def test_localseek_loads_it_tokenizes_as_qwen2_and_generates(tiny_r1_gguf):
    llm = LLM(str(tiny_r1_gguf), dtype="float32", device="cpu", show_progress=False)
    tok = llm.tokenizer
    # Qwen2's real BPE ids ("Hello" 9707, " world" 1879) after R1's BOS; added tokens whole.
    assert tok.encode("Hello world") == [BOS_ID, 9707, 1879]
    assert tok.encode("<｜User｜>hi<think>")[1] == USER_ID
    assert THINK_ID in tok.encode("<｜User｜>hi<think>")
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\n"
    out = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    assert len(out[0].token_ids) == 6 and out[0].finish_reason == "length"
    assert all(0 <= t < 152064 for t in out[0].token_ids)


def test_quantize_without_the_tool_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_QUANTIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="llama-quantize"):
        make_gguf.main(
            ["--preset", "tiny", "--out", str(tmp_path / "x.gguf"), "--quantize", "Q4_K_M"]
        )


@pytest.mark.skipif(
    not (os.environ.get("LLAMA_QUANTIZE") or shutil.which("llama-quantize")),
    reason="llama.cpp's llama-quantize not found ($LLAMA_QUANTIZE or PATH); built by hand, "
    "see docs/benchmarks.md",
)
def test_llama_quantize_output_loads_in_localseek(tiny_r1_gguf, tmp_path):
    binary = os.environ.get("LLAMA_QUANTIZE") or shutil.which("llama-quantize")
    out = tmp_path / "tiny-q8_0.gguf"
    make_gguf.quantize(binary, tiny_r1_gguf, out, "Q8_0", threads=1)
    ffn = next(t for t in GGUFFile(out).tensors if t.name == "blk.0.ffn_up.weight")
    assert ffn.ggml_type == gguf.GGMLQuantizationType.Q8_0
    llm = LLM(str(out), dtype="float32", device="cpu", show_progress=False)
    done = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert len(done[0].token_ids) == 3
