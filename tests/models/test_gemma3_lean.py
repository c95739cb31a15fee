"""The lean Gemma 3 decode step (models/gemma3_lean.py): the modules' results, bitwise, on
GGUF blocks on CPU, sliding-window layers and the demo model included."""

from __future__ import annotations

import pytest
import torch
from test_gguf_linear import PROMPT, load, needs_kernel, tiny_gguf
from test_llama_lean import _counting, lean_equals_modules

from localseek.engine.llm import LLM
from localseek.kernels.gguf_matmul import PACKED_TYPES
from localseek.models.gemma3_lean import LeanGemma3Decode
from localseek.sampling_params import SamplingParams
from localseek.weights.default_model import default_model_path

pytestmark = needs_kernel


@pytest.mark.parametrize("in_c", [True, False], ids=["one C call", "python loop"])
def test_decode_steps_equal_the_modules_bitwise(tmp_path, in_c):
    """Teacher-forced one token per step over a prompt longer than the sliding window, the
    layers in one C call (gguf_decode_step.c: sandwich and q/k norms, two rotary tables, two
    KV groups) or in the Python loop."""
    model = load(tiny_gguf(tmp_path, "gemma3", "Q8_0"), PACKED_TYPES)
    windows = {layer.self_attn.sliding_window for layer in model.model.layers}
    assert None in windows and any(w is not None and w < len(PROMPT) for w in windows)
    assert model.attach_fused_decode() is None
    assert isinstance(model.native_decode, LeanGemma3Decode)
    assert len(model.native_decode.rope_order) == 2
    lean_equals_modules(model, in_c)


def test_the_demo_model_generates_what_its_modules_generate():
    # float32 on every CPU kind (auto is bf16 on AVX512-BF16 hosts, where the step is not used)
    llm = LLM(default_model_path(), dtype="float32", kv_cache_tokens=1024, show_progress=False)
    model = llm.engine.runner.model
    assert isinstance(model.native_decode, LeanGemma3Decode)
    c_calls, took = _counting(model.native_decode, "native"), _counting(model)
    prompts = ["The capital of France is", "Write a haiku about the sea.", "1, 2, 3,"]
    greedy = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    lean = [out.token_ids for out in llm.generate(prompts, greedy)]
    assert any(took) and all(c_calls) and len(c_calls) == sum(took)
    model.native_decode = None
    assert [out.token_ids for out in llm.generate(prompts, greedy)] == lean


def test_a_bf16_model_keeps_the_modules_and_says_why(tmp_path):
    model = load(tiny_gguf(tmp_path, "gemma3", "Q8_0"), PACKED_TYPES, torch.bfloat16)
    why = model.attach_fused_decode()
    assert why is not None and "float32" in why and model.native_decode is None
