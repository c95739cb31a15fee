"""The fused native Gemma 3 decode step (kernels/gemma3_decode.c) computes what the per-module
int8 path computes, writes the same KV, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch
from test_gemma3 import Step, load_ours
from tiny_gemma3 import make_tiny_gemma3

from localseek.engine.kv_layout import plan_kv_layout
from localseek.engine.runner import ModelRunner
from localseek.engine.sequence import Sequence
from localseek.kernels.build import unavailable_reason
from localseek.kernels.gemma3_decode import gemma3_decode_kernel
from localseek.models.gemma3_native import attach
from localseek.models.quantization import quantize_model
from localseek.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(
    gemma3_decode_kernel() is None,
    reason=f"the fused Gemma 3 step cannot run here: {unavailable_reason('gemma3_decode')}",
)

BLOCK_SIZE = 4
# Decoder outputs (final-normed, |h| ~1.7 on average here). The per-module path and the fused
# step round to bf16 at the same points; what can differ is float32 summation order in the
# norms, which flips single bf16 roundings now and then (a bf16 step at 4 is 0.03).
HIDDEN_ATOL = 0.1
# bf16 activations against float32 ones differ by up to 2^-9 per matmul input, and the tiny
# random model cancels a lot: measured 0.022-0.029 mean, 0.19 max; a wrong row or block gives
# errors of the size of h itself.
BATCH_MEAN_ATOL, BATCH_ATOL = 0.05, 0.4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # The tiny model with heads the kernel takes (head_dim a multiple of 32; its matmul inputs
    # 64, 128, 128 are multiples of 64), every Gemma feature kept: GQA, a 5-token window beside
    # a global layer, soft-capping.
    return make_tiny_gemma3(tmp_path_factory.mktemp("gemma3_native"), head_dim=32)


def int8_model(tiny_dir) -> torch.nn.Module:
    model = load_ours(tiny_dir, torch.bfloat16)
    quantize_model(model, "int8")
    return model


class Batch:
    """Sequences through one paged runner with the model's real KV groups: a prefill step per
    sequence, then decode steps of all of them together, teacher-forced."""

    def __init__(
        self,
        model,
        prompt_lens: list[int],
        decode_steps: int,
        seed: int = 0,
        tokens: list[list[int]] | None = None,
    ):
        self.model = model
        layout = plan_kv_layout(model.kv_cache_specs())
        self.runner = ModelRunner(
            model, BLOCK_SIZE, num_blocks=600, device="cpu", dtype=torch.bfloat16, layout=layout
        )
        free = iter(range(599, 0, -1))  # out of order, and block ids never shared by groups
        self.seqs = []
        for i, n in enumerate(prompt_lens):
            ids = [(j * 37 + 11 * i + 7 * seed + 5) % 440 for j in range(n + decode_steps)]
            seq = Sequence(f"r{i}", tokens[i] if tokens else ids, SamplingParams())
            blocks = -(-seq.num_tokens // BLOCK_SIZE)
            seq.block_tables = [[next(free) for _ in range(blocks)] for _ in layout.groups]
            self.seqs.append((seq, n))

    def prefill(self) -> None:
        for seq, n in self.seqs:
            self._forward([Step(seq, n)])

    def decode(self, advance: bool = True, rows_per_call: int | None = None) -> torch.Tensor:
        """One decode step of every sequence: the decoder's final-normed output [num_seqs,
        hidden] as float32 (not logits: the vocabulary projection's own kernel changes with
        the rows per call, see models/quantization.py). advance=False leaves
        the sequences where they were, so the same step can run again; rows_per_call splits
        the step into forward calls of that many sequences."""
        steps = [Step(seq, 1) for seq, _ in self.seqs]
        size = rows_per_call or len(steps)
        return torch.cat(
            [self._forward(steps[i : i + size], advance) for i in range(0, len(steps), size)]
        ).float()

    def decode_logits(self) -> torch.Tensor:
        """One decode step of every sequence, as the engine would sample from it."""
        return self.model.compute_logits(self._forward([Step(seq, 1) for seq, _ in self.seqs]))

    def _forward(self, steps: list[Step], advance: bool = True) -> torch.Tensor:
        with torch.inference_mode():
            batch = self.runner.prepare(steps)
            hidden = self.model(batch.input_ids, batch.positions, self.runner.kv_caches, batch.meta)
        for step in steps:
            step.seq.num_computed_tokens += step.num_new_tokens if advance else 0
        return hidden


def counted(native) -> list[int]:
    """Rows of every call that reached the kernel."""
    calls: list[int] = []
    run = native._run

    def counting(*args):
        calls.append(args[-1])
        return run(*args)

    native._run = counting
    return calls


def decode_both_ways(model, prompt_lens, steps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decode step, (per-module output, fused output) from the same cache state."""
    native = model.native_decode
    batch = Batch(model, prompt_lens, steps)
    batch.prefill()
    pairs = []
    for _ in range(steps):
        model.native_decode = None
        reference = batch.decode(advance=False)  # writes this step's K/V; the fused step
        model.native_decode = native  # then rewrites the same slots
        pairs.append((reference, batch.decode()))
    return pairs


def test_attaches_to_bf16_models_with_int8_layers(tiny_dir):
    model = int8_model(tiny_dir)
    assert attach(model) is None
    assert model.native_decode is not None
    assert model.native_decode.max_rows == gemma3_decode_kernel().max_rows >= 4


@pytest.mark.parametrize(
    ("dtype", "method", "reason"),
    [
        (torch.bfloat16, "none", "int8"),
        (torch.float32, "int8", "bfloat16"),
        (torch.bfloat16, "int4", "int4"),
    ],
)
def test_other_models_keep_the_per_module_path(tiny_dir, dtype, method, reason):
    model = load_ours(tiny_dir, dtype)
    if method != "none":
        quantize_model(model, method)
    why = attach(model)
    assert why is not None and reason in why
    assert model.native_decode is None


@pytest.mark.parametrize("prompt_lens", [[9], [2, 5], [3, 9, 14], [2, 4, 6, 13]])
def test_decode_steps_match_the_per_module_path(tiny_dir, prompt_lens):
    # One to four rows, where both read the int8 weights with float32 activations; contexts
    # start below, at and above the 5-token window and grow past it.
    model = int8_model(tiny_dir)
    attach(model)
    calls = counted(model.native_decode)
    for reference, fused in decode_both_ways(model, prompt_lens, steps=8):
        torch.testing.assert_close(fused, reference, atol=HIDDEN_ATOL, rtol=0)
    assert calls == [len(prompt_lens)] * 8


@pytest.mark.parametrize("rows", [6, 16, 18, 27])
def test_batched_rows_match_the_same_rows_a_few_at_a_time(tiny_dir, rows):
    # Above 4 rows the fused step multiplies bf16-rounded activations in tiles of 16 rows, the
    # last one of 8 when at most 8 are left (6: one of 8; 18: 16 + 8; 27: 16 + 16, both
    # padded); against the same step run 4 rows per call on float32 activations, which the
    # test above ties to the per-module path.
    model = int8_model(tiny_dir)
    attach(model)
    model.native_decode.max_rows = 32
    calls = counted(model.native_decode)
    batch = Batch(model, [2 + (i * 5) % 13 for i in range(rows)], decode_steps=4)
    batch.prefill()
    for _ in range(4):
        few = batch.decode(advance=False, rows_per_call=4)
        together = batch.decode()
        torch.testing.assert_close(together, few, atol=BATCH_ATOL, rtol=0)
        assert (together - few).abs().mean() <= BATCH_MEAN_ATOL
    assert calls == ([4] * (rows // 4) + [rows % 4] * (rows % 4 > 0) + [rows]) * 4


def test_a_long_context_split_across_threads_matches_the_per_module_path(tmp_path):
    # One sequence of 600+ tokens: the global layer's keys are split among 4 threads and the
    # partial softmaxes merged (the 5-token window layers are not split). The merge itself is
    # checked against float64 in tests/kernels; this runs the split inside the fused step,
    # whose hidden states on the random tiny model are not sensitive to it.
    model_dir = make_tiny_gemma3(tmp_path, head_dim=32, max_position_embeddings=1024)
    model = load_ours(model_dir, torch.bfloat16)
    quantize_model(model, "int8")
    attach(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        pairs = decode_both_ways(model, [600], steps=3)
    finally:
        torch.set_num_threads(threads)
    for reference, fused in pairs:
        torch.testing.assert_close(fused, reference, atol=HIDDEN_ATOL, rtol=0)


def test_the_kv_it_writes_serves_later_steps_of_either_path(tiny_dir):
    # Decode 10 steps with the fused step alone, then 2 with the per-module path, which reads
    # the fused step's K/V; against the per-module path throughout.
    lens = [3, 8]
    fused_model, torch_model = int8_model(tiny_dir), int8_model(tiny_dir)
    attach(fused_model)
    fused, plain = Batch(fused_model, lens, 12), Batch(torch_model, lens, 12)
    fused.prefill()
    plain.prefill()
    for step in range(12):
        if step == 10:
            fused_model.native_decode = None
        torch.testing.assert_close(fused.decode(), plain.decode(), atol=HIDDEN_ATOL, rtol=0)


def test_larger_batches_and_prefill_take_the_per_module_path(tiny_dir):
    model = int8_model(tiny_dir)
    attach(model)
    model.native_decode.max_rows = 2
    calls = counted(model.native_decode)
    batch = Batch(model, [4, 6, 9], decode_steps=2)
    batch.prefill()
    batch.decode()  # 3 rows > max_rows
    assert calls == []
    model.native_decode.max_rows = 3
    batch.decode()
    assert calls == [3]


def test_the_engine_attaches_it_and_generates_what_the_modules_generate(tiny_dir):
    from localseek import LLM

    llm = LLM(
        str(tiny_dir), dtype="bfloat16", quantization="int8", kv_cache_tokens=512,
        show_progress=False,
    )  # fmt: skip
    model = llm.engine.runner.model
    assert model.native_decode is not None
    calls = counted(model.native_decode)
    prompts = [[5, 17, 29], [40, 41, 42, 43, 44, 45, 46], [300] * 11]
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    fused = [out.token_ids for out in llm.generate(prompts, greedy)]
    assert calls and max(calls) == 3
    model.native_decode = None
    assert [out.token_ids for out in llm.generate(prompts, greedy)] == fused


def test_demo_model_fused_decode_keeps_top1_agreement():
    """The real demo GGUF (head_dim 256, 4 query heads on 1 KV head, 512-token windows): the
    passage decoded one teacher-forced token per step through the fused step, against the
    unquantized bf16 model's prefill logits. Measured over these first 160 tokens: top-1
    agreement 0.944, NLL +0.025 nats; over the whole 292-token passage 0.969, +0.023 (the
    per-module int8 path there: 0.956, +0.028)."""
    from test_quantization import PASSAGE

    from localseek.models.registry import resolve_model_class
    from localseek.weights.default_model import default_model_path
    from localseek.weights.gguf import open_gguf

    source = open_gguf(default_model_path())
    ids = source.tokenizer.encode(PASSAGE)[:160]

    def load() -> torch.nn.Module:
        model = resolve_model_class(source.config)(source.config, torch.bfloat16, "cpu")
        model.load_weights(source.weights())
        return model.eval()

    reference_model = load()
    prefill = Batch(reference_model, [len(ids)], decode_steps=0, tokens=[ids])
    with torch.inference_mode():
        steps = [Step(prefill.seqs[0][0], len(ids))]
        reference = reference_model.compute_logits(prefill._forward(steps))
    del reference_model, prefill
    model = load()
    quantize_model(model, "int8")
    assert attach(model) is None
    calls = counted(model.native_decode)
    batch = Batch(model, [0], decode_steps=len(ids), tokens=[ids])
    with torch.inference_mode():
        logits = torch.cat([batch.decode_logits() for _ in range(len(ids))])
    assert calls == [1] * len(ids)
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    targets = torch.tensor(ids[1:])[:, None]
    ours = logits[:-1].log_softmax(-1).gather(-1, targets)
    ref = reference[:-1].log_softmax(-1).gather(-1, targets)
    nll_increase = (ref - ours).mean().item()
    print(f"\nfused int8 decode: top-1 agreement {agreement:.4f}, NLL +{nll_increase:.4f}")
    assert agreement >= 0.9
    assert nll_increase < 0.06
