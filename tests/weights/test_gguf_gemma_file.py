"""The embedded demo file (Gemma 3 270M, Q4_K_M GGUF) against transformers reading the same file.

Mixes F32, Q8_0, Q5_0, Q4_K and Q6_K tensors, a 262k-token SentencePiece vocabulary with no
merges, local/global attention and Gemma's stored (1 + w) norms: everything the GGUF path does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from localseek.engine.runner import ModelRunner
from localseek.engine.sequence import Sequence
from localseek.models.registry import resolve_model_class
from localseek.sampling_params import SamplingParams
from localseek.weights.default_model import default_model_path
from localseek.weights.gguf import open_gguf

TEXTS = [
    "Hello 世界! 🤖🚀 def f(x):\n    return x**2  # 注释\n\n<start_of_turn>user\nhi<end_of_turn>",
    "  leading spaces,\ttabs\r\nand 3 trailing   ",
    "Ünïcödé — “quotes” 日本語のテキスト 한국어 😀👍🏽🇺🇸 <bos>x<unused3> [multimodal]\n\n\n",
    'SELECT id FROM users WHERE name = "李雷";  -- 查询\nfor (int i = 0; i < n; ++i) {}',
    "",
]

PASSAGE = """\
The lighthouse keeper kept a logbook for forty years. Each evening he wrote the wind's
direction, the height of the waves and the names of the ships that passed. Most entries were
short: "Calm. Two fishing boats, one ferry." But on stormy nights the handwriting grew larger,
and the lines ran across the margins as if the pen itself had been blown about.

When the light was automated, the logbooks went to the town library. A student who read them
noticed that the keeper had also recorded small things: the first swallow of spring, a fox on
the rocks, the evening his daughter learned to swim. The weather data helped scientists study
how storms had changed along the coast; the small notes helped the town remember who it had been.

def moving_average(values, window):
    total = sum(values[:window])
    yield total / window
    for old, new in zip(values, values[window:]):
        total += new - old
        yield total / window

灯塔看守人的日记后来被整理成一本书。读者说，最打动他们的不是风暴，而是那些平静的夜晚。
In the end, the library kept the logbooks in a glass case near the door, open to a page from a
quiet night in June, where the only entry reads: "Clear sky. Every ship came home."
"""


@pytest.fixture(scope="module")
def demo_path() -> Path:
    return Path(default_model_path())


@pytest.fixture(scope="module")
def ours(demo_path):
    return open_gguf(demo_path)


def test_demo_file_is_the_expected_model(ours):
    assert ours.config["architectures"] == ["Gemma3ForCausalLM"]
    assert ours.config["layer_types"].count("full_attention") == 3  # layers 5, 11, 17
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"} <= set(ours.extra["tensor_types"])
    assert ours.tokenizer.bos_token_id == 2
    assert {1, 106} <= ours.tokenizer.eos_token_ids  # <eos> and <end_of_turn>
    # The file carries no chat template: Gemma's turn format stands in.
    assert ours.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_tokenizer_matches_transformers(demo_path, ours):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(demo_path.parent), gguf_file=demo_path.name)
    for text in [*TEXTS, PASSAGE]:
        for special in (True, False):
            ids = ours.tokenizer.encode(text, add_special_tokens=special)
            assert ids == reference.encode(text, add_special_tokens=special), text
        for skip in (True, False):
            assert ours.tokenizer.decode(ids, skip) == reference.decode(
                ids, skip_special_tokens=skip
            )


class _Step:
    def __init__(self, seq: Sequence, num_new_tokens: int):
        self.seq, self.num_new_tokens = seq, num_new_tokens


def _our_logits(source, token_ids: list[int]) -> torch.Tensor:
    model = resolve_model_class(source.config)(source.config, torch.float32, torch.device("cpu"))
    model.load_weights(source.weights())
    block_size = 16
    num_blocks = -(-len(token_ids) // block_size)
    runner = ModelRunner(model.eval(), block_size, num_blocks, device="cpu", dtype=torch.float32)
    seq = Sequence("r", token_ids, SamplingParams())
    seq.block_table = list(range(num_blocks))[::-1]
    batch = runner.prepare([_Step(seq, len(token_ids))])
    with torch.inference_mode():
        hidden = model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
        return model.compute_logits(hidden)


@pytest.mark.slow  # transformers alone takes ~1-2 minutes to load and run this file here
def test_teacher_forced_logits_match_transformers(demo_path, ours):
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF")
    from transformers import AutoModelForCausalLM

    ids = ours.tokenizer.encode(PASSAGE)
    assert 250 <= len(ids) <= 600
    logits = _our_logits(ours, ids)
    reference = AutoModelForCausalLM.from_pretrained(
        str(demo_path.parent), gguf_file=demo_path.name, dtype=torch.float32
    ).eval()
    with torch.inference_mode():
        ref_logits = reference(torch.tensor([ids])).logits[0].float()
    del reference
    agreement = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()
    targets = torch.tensor(ids[1:])[:, None]
    ours_lp = logits[:-1].log_softmax(-1).gather(-1, targets)
    ref_lp = ref_logits[:-1].log_softmax(-1).gather(-1, targets)
    mean_delta = (ours_lp - ref_lp).abs().mean().item()
    print(f"\n{len(ids)} tokens: top-1 agreement {agreement:.4f}, mean |dlogprob| {mean_delta:.2e}")
    assert agreement >= 0.99
    assert mean_delta < 1e-3
