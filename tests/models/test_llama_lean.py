"""The lean Llama/Qwen2 decode step (models/llama_lean.py): the modules' results, bitwise,
on GGUF blocks on CPU; everything it does not take runs the modules."""

from __future__ import annotations

import pytest
import torch
from test_gguf_linear import PROMPT, decode_logits, load, needs_kernel, tiny_gguf

from localseek.engine.llm import LLM
from localseek.kernels.gguf_matmul import PACKED_TYPES
from localseek.models.llama_lean import LeanLlamaDecode
from localseek.sampling_params import SamplingParams

pytestmark = needs_kernel


def _counting(owner, name: str = "native_decode") -> list[bool]:
    """Wrap owner.<name> (a model's native step, or a lean step's C call) to record whether
    each call took it (True) or declined."""
    step, took = getattr(owner, name), []

    def counted(*args):
        out = step(*args)
        took.append(out is not None)
        return out

    setattr(owner, name, counted)
    return took


def lean_equals_modules(model, in_c: bool) -> None:
    """Teacher-forced over PROMPT, one token per step: the attached lean step takes every step,
    all of them in its one C call (in_c) or all in its Python loop, and its logits equal the
    modules' to the last bit."""
    step = model.native_decode
    assert step.native is not None  # the kernel builds wherever the others do
    if in_c:
        c_calls = _counting(step, "native")
    else:
        step.native = None
    took = _counting(model)
    lean = decode_logits(model, PROMPT)
    assert took == [True] * len(PROMPT)
    if in_c:
        assert c_calls == [True] * len(PROMPT)
    model.native_decode = None
    assert torch.equal(lean, decode_logits(model, PROMPT))


@pytest.mark.parametrize("in_c", [True, False], ids=["one C call", "python loop"])
@pytest.mark.parametrize(("arch", "qtype"), [("qwen2", "Q8_0"), ("llama", "Q4_0")])
def test_decode_steps_equal_the_modules_bitwise(tmp_path, arch, qtype, in_c):
    """Teacher-forced one token per step: the same logits to the last bit, with the step
    taken every time (qwen2 carries q/k/v biases), whether the layers run in one C call
    (gguf_decode_step.c) or in the Python loop over the same kernels."""
    model = load(tiny_gguf(tmp_path, arch, qtype), PACKED_TYPES)
    assert model.attach_fused_decode() is None
    assert isinstance(model.native_decode, LeanLlamaDecode)
    lean_equals_modules(model, in_c)


def test_the_engine_attaches_it_and_batches_generate_what_the_modules_generate(tmp_path):
    # float32 on every CPU kind (auto is bf16 on AVX512-BF16 hosts, where the step is not used)
    path = str(tiny_gguf(tmp_path, "qwen2", "Q8_0").path)
    llm = LLM(path, dtype="float32", kv_cache_tokens=512, show_progress=False)
    model = llm.engine.runner.model
    assert isinstance(model.native_decode, LeanLlamaDecode)
    took = _counting(model)
    prompts = [PROMPT[:9], PROMPT[3:20], PROMPT[:4], PROMPT[5:12], PROMPT[1:30]]
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    lean = [out.token_ids for out in llm.generate(prompts, greedy)]
    assert any(took)  # decode-only steps went through it (prefill and mixed steps did not)
    model.native_decode = None
    assert [out.token_ids for out in llm.generate(prompts, greedy)] == lean


def test_models_it_does_not_suit_keep_the_modules(tmp_path):
    packed = load(tiny_gguf(tmp_path, "qwen2", "Q8_0"), PACKED_TYPES, torch.bfloat16)
    assert "float32" in packed.attach_fused_decode() and packed.native_decode is None
    dense = load(tiny_gguf(tmp_path, "qwen2", "Q8_0"), frozenset())
    assert "not GGUF blocks" in dense.attach_fused_decode() and dense.native_decode is None


def test_a_c_call_that_declines_part_way_leaves_the_step_to_the_loop(tmp_path):
    """The C step gives up at the last layer's down projection (an activation level count the
    block kernel refuses), after every layer's K/V are written: the loop then runs the step
    and writes them again, and the logits are still the modules'."""
    model = load(tiny_gguf(tmp_path, "qwen2", "Q8_0"), PACKED_TYPES)
    assert model.attach_fused_decode() is None
    step = model.native_decode
    step.native._layers[-1].down.levels = 3
    c_calls, took = _counting(step, "native"), _counting(model)
    lean = decode_logits(model, PROMPT)
    assert c_calls == [False] * len(PROMPT) and took == [True] * len(PROMPT)
    model.native_decode = None
    assert torch.equal(lean, decode_logits(model, PROMPT))
