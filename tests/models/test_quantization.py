"""Quantized linears: each kernel computes what the stored weights say, the plan picks kernels by
row count, a quantized model stays close to the unquantized one, tiny and real."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_gemma3 import Step, load_ours, stepwise_logits
from tiny_gemma3 import make_tiny_gemma3
from torch.profiler import profile

from localseek.config import ModelConfig
from localseek.errors import ConfigError
from localseek.models.quantization import (
    ANY_ROWS,
    KERNELS,
    QuantizedEmbedding,
    QuantizedLinear,
    onednn_int8_available,
    quantize_model,
)
from localseek.models.top_refine import REFINE_TOP
from localseek.models.weight_quantizers import (
    dequantize_int4,
    input_balance,
    quantize_int4,
    quantize_int8,
)

PROMPT = [(i * 37 + 11) % 440 for i in range(29)]
# The aten op that proves each CPU kernel ran (the generic ones run aten::linear on a
# dequantized weight).
_ATEN = {
    "int8_w8a16": "aten::_weight_int8pack_mm",
    "int8_w8a8": "aten::_int_mm",
    "int4_w4a16": "aten::_weight_int4pack_mm_for_cpu",
    "int8_onednn": "onednn::qlinear_pointwise",
}


def _int8_weight(m: QuantizedLinear) -> torch.Tensor:
    return m.q8.float() * m.scale8[:, None] * m.balance8[None, :]


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.05
    w[:, 3] *= 8  # one loud input column, as real embedding tables have
    return w


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("rows", [1, 3, 9])
def test_every_kernel_computes_the_stored_weights(weight, kernel, rows):
    if kernel == "int8_onednn" and not onednn_int8_available():
        pytest.skip("oneDNN int8 needs VNNI/AMX int8 instructions, which this CPU lacks")
    linear = QuantizedLinear(weight, None, ((ANY_ROWS, kernel),))
    x = torch.randn(rows, 128)
    with profile() as prof:
        y = linear(x)
    if kernel in _ATEN:
        assert any(e.name.startswith(_ATEN[kernel]) for e in prof.events())
    storage = KERNELS[kernel].storage
    if storage == "dense":
        stored = weight
    elif storage == "int8":
        stored = _int8_weight(linear)
    elif storage == "int8_onednn":  # packed for oneDNN: the same int8 values, quantized again
        q8, scale8 = quantize_int8(weight, input_balance(weight))
        stored = q8.float() * scale8[:, None] * input_balance(weight)[None, :]
    elif storage == "int4":
        stored = dequantize_int4(linear.q4, linear.scale_zero4)
    else:  # the CPU int4 packing is opaque: check against the same values unpacked plainly
        stored = dequantize_int4(*quantize_int4(weight))
    expected = x @ stored.T
    # W8A8 also rounds the activations (residual-corrected up to 4 rows; oneDNN's with one
    # scale for the whole call); the rest differ only in summation order.
    tol = 1e-4
    if kernel == "int8_w8a8":
        tol = 2e-2 if rows > 4 else 2e-3
    elif kernel == "int8_onednn":
        tol = 4e-2
    assert (y - expected).norm() / expected.norm() < tol
    # Whatever the kernel, the stored weights are close to the dense ones.
    assert (stored - weight).norm() / weight.norm() < (0.1 if "int4" in storage else 0.01)


def test_the_plan_picks_the_kernel_by_row_count(weight):
    plan = ((1, "int4_w4a16"), (4, "int8_w8a16"), (ANY_ROWS, "int8_w8a8"))
    linear = QuantizedLinear(weight.bfloat16(), None, plan)
    for rows, op in [(1, _ATEN["int4_w4a16"]), (4, _ATEN["int8_w8a16"]), (5, _ATEN["int8_w8a8"])]:
        with profile() as prof:
            out = linear(torch.randn(rows, 128, dtype=torch.bfloat16))
        names = {e.name for e in prof.events()}
        assert op in names and not (set(_ATEN.values()) - {op}) & names, (rows, names)
        assert out.shape == (rows, 64) and out.dtype == torch.bfloat16
    # Only what the plan's kernels read is stored.
    assert not hasattr(linear, "weight") and {"q8", "q4"} <= dict(linear.named_buffers()).keys()


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_linears_whose_shape_a_cpu_kernel_mishandles_get_another_kernel(method):
    """`_weight_int8pack_mm` returns wrong, call-to-call different values when K is not a
    multiple of 16 (a tiny DeepSeek's q_b_proj is 24 -> 48): the plan must avoid it there."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(24, 48, bias=False)).to(torch.bfloat16)
    dense = model[0].weight.detach().float().clone()
    quantize_model(model, method)
    assert not {"int8_w8a16", "int8_native"} & {name for _, name in model[0].plan}
    x = torch.randn(1, 24, dtype=torch.bfloat16)
    first, again = model(x).float(), model(x).float()
    assert torch.equal(first, again)
    expected = x.float() @ dense.T
    assert (first - expected).norm() / expected.norm() < 0.03


def test_a_plan_mixing_both_int4_layouts_is_refused(weight):
    with pytest.raises(ConfigError, match="mixes"):
        QuantizedLinear(weight, None, ((1, "int4_w4a16"), (ANY_ROWS, "int4_dequant")))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_gemma3(tmp_path_factory.mktemp("gemma3q"))


@pytest.fixture(scope="module")
def reference_logits(tiny_dir) -> torch.Tensor:
    return stepwise_logits(load_ours(tiny_dir), PROMPT, [20, 1, 1, 1, 6])


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# int8 per channel rounds each weight by at most half a step (row max / 254). Relative logit
# error measured on this model: int8 2.5% with the CPU plan (bf16 layers above 4 rows), 4.1%
# all-int8 (generic); int4 vocab projection 3.6% / 8.4%. The bounds leave ~2x headroom; a
# dropped scale, a transposed weight or a wrong packing gives errors of order 100%.
@pytest.mark.parametrize(("method", "bound"), [("int8", 0.08), ("int4", 0.2)])
@pytest.mark.parametrize("fast_kernels", [True, False])
def test_quantized_model_logits_stay_close(tiny_dir, reference_logits, method, bound, fast_kernels):
    model = load_ours(tiny_dir)
    report = quantize_model(model, method, fast_kernels=fast_kernels)
    assert report.num_linears == 3 * 4 + 1  # qkv, o, gate_up, down per layer, and lm_head
    kernels = {
        name for m in model.modules() if isinstance(m, QuantizedLinear) for _, name in m.plan
    }
    if fast_kernels:
        assert any(KERNELS[k].cpu_only for k in kernels)
    else:  # what a CUDA device gets: nothing CPU-only
        assert kernels <= {"int8_dequant", "int4_dequant"}
    logits = stepwise_logits(model, PROMPT, [20, 1, 1, 1, 6])
    error = _relative_error(logits, reference_logits)
    assert 0 < error < bound


def test_refined_vocab_projection_keeps_every_greedy_choice(tiny_dir, reference_logits):
    """Layers left dense, the vocabulary projection quantized the CPU way (int4 up to 4 rows,
    int8 above) and refined: each position's top choices carry the unquantized logits, so
    greedy decoding cannot change, though every other logit is approximate."""
    model = load_ours(tiny_dir)
    quantize_model(model, "int8", plan=((ANY_ROWS, "dense"),))
    assert model.lm_head.refine == REFINE_TOP
    above = "int8_onednn" if onednn_int8_available() else "int8_w8a8"  # oneDNN needs VNNI
    assert [name for _, name in model.lm_head.plan] == ["int4_w4a16", above]
    logits = stepwise_logits(model, PROMPT, [20, 1, 1, 1, 6])
    assert torch.equal(logits.argmax(-1), reference_logits.argmax(-1))
    top = reference_logits.topk(REFINE_TOP // 2, dim=-1).indices
    torch.testing.assert_close(logits.gather(1, top), reference_logits.gather(1, top))
    assert _relative_error(logits, reference_logits) > 1e-4  # the tail is still quantized


def test_refining_projection_keeps_the_tied_dense_table_for_the_lookup(tiny_dir):
    model = load_ours(tiny_dir)
    table = model.model.embed_tokens.weight
    report = quantize_model(model, "int8")
    assert report.embedding == "dense table kept"
    assert model.lm_head.weight is not None
    assert model.lm_head.weight.data_ptr() == table.data_ptr()  # one table, not a copy


def test_tied_embedding_looks_up_the_int8_rows(tiny_dir):
    """Without refinement (the generic kernels other devices get) the dense table is dropped."""
    model = load_ours(tiny_dir)
    dense_table = model.model.embed_tokens.weight.detach().clone()
    report = quantize_model(model, "int8", fast_kernels=False)
    lookup = model.model.embed_tokens
    assert isinstance(lookup, QuantizedEmbedding) and lookup.q8 is model.lm_head.q8
    ids = torch.tensor([0, 5, 511])
    rows = lookup(ids)
    torch.testing.assert_close(rows, _int8_weight(model.lm_head)[ids])
    assert _relative_error(rows, dense_table[ids]) < 0.01
    assert report.embedding.startswith("int8")
    # The dense table is gone: the projection stores int8 rows and float32 scales only.
    assert not hasattr(model.lm_head, "weight")
    assert model.lm_head.stored_bytes() < dense_table.numel() * dense_table.element_size() / 2


def test_bad_method_is_a_config_error_naming_the_choices(tiny_dir):
    with pytest.raises(
        ConfigError, match=r"\('auto', 'gguf', 'none', 'int8', 'int4'\), got 'int3'"
    ):
        ModelConfig(model="m", quantization="int3")
    for method in ("fp8", "auto"):  # auto is resolved at load, from the file
        with pytest.raises(ConfigError, match=method):
            quantize_model(torch.nn.Linear(4, 4), method)


def test_engine_and_cli_take_the_method(tiny_dir):
    from localseek import LLM, SamplingParams
    from localseek.cli import _engine_config, build_parser

    args = build_parser().parse_args(["serve", str(tiny_dir), "--quantization", "int8"])
    assert _engine_config(args).model.quantization == "int8"
    with pytest.raises(SystemExit):  # argparse names the choices
        build_parser().parse_args(["generate", str(tiny_dir), "hi", "--quantization", "q3"])
    llm = LLM(str(tiny_dir), quantization="int8", kv_cache_tokens=256, show_progress=False)
    assert any(isinstance(m, QuantizedLinear) for m in llm.engine.runner.model.modules())
    out = llm.generate([PROMPT[:8]], SamplingParams(temperature=0, max_tokens=5))[0]
    assert len(out.token_ids) == 5


def test_deepseek_mla_keeps_the_weight_it_reads_as_a_tensor(tmp_path):
    """MLA absorbs kv_b_proj's weight into q and the output: that linear stays dense, the
    others (including the MoE's shared experts) are quantized, and the model still runs."""
    from tiny_deepseek import make_tiny_deepseek

    from localseek import LLM, SamplingParams

    model_dir = make_tiny_deepseek(tmp_path, "v3", with_tokenizer=True)
    llm = LLM(str(model_dir), quantization="int8", kv_cache_tokens=256, show_progress=False)
    modules = dict(llm.engine.runner.model.named_modules())
    kv_b = [m for name, m in modules.items() if name.endswith("kv_b_proj")]
    assert kv_b and all(type(m) is not QuantizedLinear for m in kv_b)
    assert sum(isinstance(m, QuantizedLinear) for m in modules.values()) > len(kv_b)
    out = llm.generate([PROMPT[:8]], SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.token_ids) == 4


PASSAGE = """\
The harbour town woke early. Before the sun cleared the hills, the bakers had lit their ovens
and the fishing boats were already past the breakwater, their lamps swinging in the swell. By
seven the market square was full: crates of mackerel and crab, baskets of lemons, a man selling
knives who sharpened one on a whetstone every few minutes to draw a crowd.

The old ferry still ran twice a day to the island, although fewer people took it now that the
bridge had been built further up the coast. Its captain had worked the route for thirty-one
years. He knew every rock under the water, every current that turned with the tide, and the
names of most of his passengers' grandchildren. When the council proposed retiring the boat, the
town held a meeting that ran until midnight, and in the end the ferry stayed.

def count_words(lines):
    counts = {}
    for line in lines:
        for word in line.lower().split():
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])

In the evening the square emptied again. The last stalls were folded away, gulls picked at what
the fishmongers had left, and the lights of the ferry crossed the dark water one more time.
"""


def test_demo_model_int8_decode_path_keeps_top1_agreement():
    """The real demo GGUF, teacher-forced over ~300 tokens of text: int8 as decode runs it.

    Layers forced onto the one-row kernel (w8a16) at every M and the vocabulary projection
    called one row at a time, i.e. the kernels of batch-1 decode (int4 candidates, top 32
    recomputed from the bf16 table). Measured against the same model unquantized, both bf16,
    on this passage (292 tokens): top-1 agreement 0.949, mean |dlogprob| of the true next
    token 0.095, NLL +0.026 nats. The NLL shift is the int4 tail of the vocabulary: its
    rounding noise inflates the probability mass outside the top 32 (the vocabulary
    projection alone: agreement 0.980, NLL +0.016; its W8A8 form at 16 rows: NLL +0.000).
    For scale, bf16 vs float32 of the unquantized model agree on 0.97 of positions (mean
    |dlogprob| 0.04), and the reference's bf16-rounded logits tie often enough that exact
    logits alone disagree with it on ~2% of positions.
    """
    from localseek.engine.runner import ModelRunner
    from localseek.engine.sequence import Sequence
    from localseek.models.registry import resolve_model_class
    from localseek.sampling_params import SamplingParams
    from localseek.weights.default_model import default_model_path
    from localseek.weights.gguf import open_gguf

    source = open_gguf(default_model_path())
    ids = source.tokenizer.encode(PASSAGE)
    model = resolve_model_class(source.config)(source.config, torch.bfloat16, "cpu")
    model.load_weights(source.weights())
    model.eval()

    def hidden_states() -> torch.Tensor:
        blocks = -(-len(ids) // 16)
        runner = ModelRunner(model, 16, blocks, device="cpu", dtype=torch.bfloat16)
        seq = Sequence("r", ids, SamplingParams())
        seq.block_table = list(range(blocks))
        batch = runner.prepare([Step(seq, len(ids))])
        return model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)

    with torch.inference_mode():
        reference = model.compute_logits(hidden_states())
        quantize_model(model, "int8", plan=((ANY_ROWS, "int8_w8a16"),))
        hidden = hidden_states()
        logits = torch.cat([model.compute_logits(hidden[i : i + 1]) for i in range(len(ids))])
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    targets = torch.tensor(ids[1:])[:, None]
    ours_lp = logits[:-1].log_softmax(-1).gather(-1, targets)
    ref_lp = reference[:-1].log_softmax(-1).gather(-1, targets)
    delta = (ours_lp - ref_lp).abs().mean().item()
    nll_increase = (ref_lp - ours_lp).mean().item()
    print(
        f"\nint8: top-1 agreement {agreement:.4f}, mean |dlogprob| {delta:.3f}, "
        f"NLL +{nll_increase:.4f}"
    )
    assert agreement >= 0.88
    assert delta < 0.15
    assert nll_increase < 0.05
