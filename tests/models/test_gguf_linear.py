"""A quantized GGUF stays in its blocks: the linears and the embedding compute on the file's own
bytes, the logits stay those of the exactly dequantized model, and the loader chooses this only
where the native kernel runs."""

from __future__ import annotations

import ctypes
import logging

import pytest
import torch
from test_quantization import PASSAGE
from tiny_gemma3 import make_tiny_gemma3
from tiny_gguf import write_tiny_gguf
from tiny_models import make_tiny_model

from localseek.config import ModelConfig
from localseek.engine.llm import LLM
from localseek.engine.runner import ModelRunner
from localseek.engine.sequence import Sequence
from localseek.errors import ConfigError
from localseek.kernels import build
from localseek.kernels.gguf_matmul import PACKED_TYPES, gguf_matmul_kernel
from localseek.models.gguf_linear import GGUFEmbedding, GGUFLinear
from localseek.models.linear_methods import choose_linear_method
from localseek.models.registry import resolve_model_class
from localseek.sampling_params import SamplingParams
from localseek.weights.default_model import default_model_path
from localseek.weights.gguf import open_gguf
from localseek.weights.hf import open_hf_dir

needs_kernel = pytest.mark.skipif(
    gguf_matmul_kernel() is None, reason=str(build.unavailable_reason("gguf_matmul"))
)
CPU = torch.device("cpu")
PROMPT = [(i * 37 + 11) % 440 for i in range(29)]


class Step:
    def __init__(self, seq: Sequence, num_new_tokens: int):
        self.seq, self.num_new_tokens = seq, num_new_tokens


def tiny_gguf(tmp_path, arch: str, qtype: str):
    """A tiny random `arch` model written as llama.cpp would, 2-D weights in `qtype`."""
    if arch == "gemma3":  # GGUF has no query-scale field: llama.cpp uses 1/sqrt(head_dim)
        model_dir = make_tiny_gemma3(tmp_path, query_pre_attn_scalar=16)
    else:
        model_dir = make_tiny_model(tmp_path, arch)
    return open_gguf(write_tiny_gguf(model_dir, tmp_path / "m.gguf", arch, tensor_type=qtype))


def load(source, keep_packed, dtype=torch.float32) -> torch.nn.Module:
    model = resolve_model_class(source.config)(source.config, dtype, CPU)
    model.load_weights(source.weights(keep_packed))
    return model.eval()


def runner_for(model, ids: list[int], dtype=torch.float32) -> tuple[ModelRunner, Sequence]:
    """A runner with KV blocks for `ids`, and the sequence holding them."""
    blocks = -(-len(ids) // 16)
    runner = ModelRunner(model, 16, blocks, device="cpu", dtype=dtype)
    seq = Sequence("r", ids, SamplingParams())
    seq.block_table = list(range(blocks))
    return runner, seq


def logits(model, ids: list[int], dtype=torch.float32) -> torch.Tensor:
    runner, seq = runner_for(model, ids, dtype)
    batch = runner.prepare([Step(seq, len(ids))])
    with torch.inference_mode():
        return model.compute_logits(
            model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
        )


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def mapping_range(source) -> tuple[int, int]:
    buf = source.weight_iter.__closure__  # the GGUFFile the source reads through
    gguf = next(c.cell_contents for c in buf if hasattr(c.cell_contents, "_buf"))
    start = ctypes.addressof(ctypes.c_char.from_buffer(gguf._buf))
    return start, start + len(gguf._buf)


@needs_kernel
@pytest.mark.parametrize("arch,qtype", [("qwen2", "Q8_0"), ("llama", "Q4_0"), ("gemma3", "Q5_0")])
def test_linears_compute_on_the_files_blocks(tmp_path, arch, qtype):
    """qwen2: biases beside packed q/k/v; llama: llama.cpp's q/k row order undone on packed
    rows; gemma3: a tied vocabulary projection over the packed embedding."""
    source = tiny_gguf(tmp_path, arch, qtype)
    dense, packed = load(source, frozenset()), load(source, PACKED_TYPES)
    linears = [m for m in packed.modules() if isinstance(m, GGUFLinear)]
    assert len(linears) == 4 * packed.args.num_layers + 1  # qkv, o, gate_up, down; lm_head
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.modules())
    assert isinstance(packed.model.embed_tokens, GGUFEmbedding)
    if arch == "gemma3":  # tied: the projection reads the embedding's blocks
        assert packed.lm_head.ordered_parts()[0] is packed.model.embed_tokens.packed
    start, end = mapping_range(source)
    in_file = [start <= p.data.data_ptr() < end for m in linears for p in m.ordered_parts()]
    if arch == "llama":  # q and k rows were reordered (a copy), everything else is the file
        assert in_file.count(False) == 2 * packed.args.num_layers
    else:
        assert all(in_file)
    assert relative_error(logits(packed, PROMPT), logits(dense, PROMPT)) < 1e-3
    for module in linears:  # each module's weights are exactly the file's dequantized values
        assert module.dequantized().shape == (module.out_features, module.in_features)


@needs_kernel
def test_bf16_model_on_packed_blocks(tmp_path):
    source = tiny_gguf(tmp_path, "qwen2", "Q8_0")
    dense = load(source, frozenset(), torch.bfloat16)
    packed = load(source, PACKED_TYPES, torch.bfloat16)
    ours, ref = logits(packed, PROMPT, torch.bfloat16), logits(dense, PROMPT, torch.bfloat16)
    assert relative_error(ours, ref) < 3e-2  # both round activations to bf16 between ops


def decode_logits(model, ids: list[int]) -> torch.Tensor:
    """Teacher-forced one token per step, as decoding runs (the kernel's int8 path)."""
    runner, seq = runner_for(model, ids)
    rows = []
    with torch.inference_mode():
        for i in range(len(ids)):
            seq.num_computed_tokens = i
            batch = runner.prepare([Step(seq, 1)])
            hidden = model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
            rows.append(model.compute_logits(hidden))
    return torch.cat(rows)


def agreement_and_delta(ours: torch.Tensor, reference: torch.Tensor, ids: list[int]):
    """Top-1 agreement, and mean |dlogprob| of the true next token."""
    agreement = (ours.argmax(-1) == reference.argmax(-1)).float().mean().item()
    targets = torch.tensor(ids[1:])[:, None]
    logp = [t[:-1].log_softmax(-1).gather(-1, targets) for t in (ours, reference)]
    return agreement, (logp[0] - logp[1]).abs().mean().item()


@needs_kernel
@pytest.mark.parametrize("step", ["prefill", "decode"])
def test_demo_model_on_its_blocks_keeps_the_exact_models_predictions(step):
    """The real demo GGUF (Q4_K, Q5_0, Q6_K, Q8_0), teacher-forced over ~300 tokens, against
    the same file dequantized exactly, both float32. A prefill multiplies on float32
    dequantized rows; decode steps on int8 activations in two levels. Measured (decode, AVX2
    EPYC): top-1 agreement 1.000, mean |dlogprob| 0.0003; one level, llama.cpp's precision,
    gives 0.935 and 0.070 and would fail."""
    source = open_gguf(default_model_path())
    ids = source.tokenizer.encode(PASSAGE)
    reference = logits(load(source, frozenset()), ids)
    packed = load(source, PACKED_TYPES)
    ours = logits(packed, ids) if step == "prefill" else decode_logits(packed, ids)
    agreement, delta = agreement_and_delta(ours, reference, ids)
    print(f"\n{len(ids)} tokens: top-1 agreement {agreement:.4f}, mean |dlogprob| {delta:.5f}")
    assert agreement >= 0.99
    assert delta <= 0.01


@needs_kernel
def test_q8_activations_reach_every_block_linear_at_llama_cpps_precision():
    """--gguf-activations q8: every block linear decodes on one int8 level, as llama.cpp
    multiplies: looser than q16 (measured on an AVX2 EPYC: top-1 0.935, mean |dlogprob|
    0.070), yet still the model's predictions."""
    llm = LLM(
        default_model_path(),
        dtype="float32",  # as the reference; auto is bf16 on AVX512-BF16 hosts
        gguf_activations="q8",
        kv_cache_tokens=512,
        show_progress=False,
    )
    model = llm.engine.runner.model
    block_linears = [m for m in model.modules() if isinstance(m, GGUFLinear)]
    assert block_linears and {m.levels for m in block_linears} == {1}
    source = open_gguf(default_model_path())
    ids = source.tokenizer.encode(PASSAGE)
    reference = logits(load(source, frozenset()), ids)
    agreement, delta = agreement_and_delta(decode_logits(model, ids), reference, ids)
    print(
        f"\n{len(ids)} tokens at q8: top-1 agreement {agreement:.4f}, mean |dlogprob| {delta:.5f}"
    )
    assert 0.9 <= agreement < 1.0  # exact agreement would mean the second level still ran
    assert delta <= 0.15
    with pytest.raises(ConfigError, match="gguf_activations must be one of"):
        ModelConfig(model="m.gguf", gguf_activations="q4")


@needs_kernel
def test_auto_keeps_a_quantized_gguf_packed_and_everything_else_dense(tmp_path):
    demo = open_gguf(default_model_path())
    method = choose_linear_method("auto", demo, CPU)
    assert method.name == "gguf" and method.requantize is None
    assert method.keep_packed == PACKED_TYPES & method.keep_packed  # only kernel types
    assert choose_linear_method("none", demo, CPU).keep_packed == frozenset()
    assert choose_linear_method("int8", demo, CPU).requantize == "int8"
    hf = open_hf_dir(make_tiny_model(tmp_path, "qwen2"))
    assert choose_linear_method("auto", hf, CPU).name == "dense"
    with pytest.raises(ConfigError, match="only GGUF files carry packed blocks"):
        choose_linear_method("gguf", hf, CPU)
    cuda = choose_linear_method("auto", demo, torch.device("cuda"))
    assert cuda.name == "dense" and "cuda" in cuda.reason


def test_without_the_kernel_auto_dequantizes_and_says_why(monkeypatch):
    monkeypatch.setenv("LOCALSEEK_NATIVE_KERNELS", "0")
    build.load.cache_clear()
    gguf_matmul_kernel.cache_clear()
    try:
        method = choose_linear_method("auto", open_gguf(default_model_path()), CPU)
        assert method.name == "dense" and "LOCALSEEK_NATIVE_KERNELS" in method.reason
        with pytest.raises(ConfigError, match="LOCALSEEK_NATIVE_KERNELS"):
            choose_linear_method("gguf", open_gguf(default_model_path()), CPU)
    finally:
        build.load.cache_clear()
        gguf_matmul_kernel.cache_clear()


@needs_kernel
def test_a_block_type_without_a_kernel_is_dequantized_with_one_warning(tmp_path, caplog):
    source = tiny_gguf(tmp_path, "qwen2", "Q4_1")
    with caplog.at_level(logging.WARNING, logger="localseek.models.linear_methods"):
        method = choose_linear_method("auto", source, CPU)
    assert "Q4_1" in caplog.text and "dequantized" in caplog.text
    model = load(source, method.keep_packed)
    assert not any(isinstance(m, GGUFLinear) for m in model.modules())
