"""Gemma 3 through the paged runner agrees with transformers on the same weights."""

from __future__ import annotations

import pytest
import torch
from tiny_gemma3 import make_tiny_gemma3
from tiny_models import load_reference

from localseek.engine.runner import ModelRunner
from localseek.engine.sequence import Sequence
from localseek.errors import ModelLoadError
from localseek.models.gemma3 import Gemma3ForCausalLM, gemma3_args
from localseek.models.registry import resolve_model_class
from localseek.sampling_params import SamplingParams
from localseek.weights.hf import open_hf_dir, read_hf_config

BLOCK_SIZE = 4
PROMPT = [(i * 37 + 11) % 440 for i in range(29)]


class Step:
    """What the runner reads from the scheduler's ScheduledSeq."""

    def __init__(self, seq: Sequence, num_new_tokens: int):
        self.seq, self.num_new_tokens = seq, num_new_tokens


def load_ours(model_dir, dtype=torch.float32) -> torch.nn.Module:
    source = open_hf_dir(model_dir)
    model = resolve_model_class(source.config)(source.config, dtype, torch.device("cpu"))
    model.load_weights(source.weights())
    return model.eval()


def stepwise_logits(model, token_ids: list[int], chunks: list[int]) -> torch.Tensor:
    """Logits of every position, computed in steps of `chunks` tokens through the paged cache
    (a multi-token chunk after the first attends to cached KV; chunks of 1 are decode steps)."""
    assert sum(chunks) == len(token_ids)
    runner = ModelRunner(model, BLOCK_SIZE, num_blocks=32, device="cpu", dtype=model.dtype)
    seq = Sequence("r", token_ids, SamplingParams())
    # Blocks out of order, so a block-table bug cannot pass by accident.
    seq.block_table = [31 - 2 * i for i in range(-(-len(token_ids) // BLOCK_SIZE))]
    rows = []
    with torch.inference_mode():
        for n in chunks:
            batch = runner.prepare([Step(seq, n)])
            hidden = model(batch.input_ids, batch.positions, runner.kv_caches, batch.meta)
            rows.append(model.compute_logits(hidden))
            seq.num_computed_tokens += n
    return torch.cat(rows)


def reference_logits(model_dir, token_ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return load_reference(model_dir)(torch.tensor([token_ids])).logits[0].float()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_gemma3(tmp_path_factory.mktemp("gemma3"))


def test_prompt_logits_match_transformers(tiny_dir):
    ours = stepwise_logits(load_ours(tiny_dir), PROMPT, [len(PROMPT)])
    ref = reference_logits(tiny_dir, PROMPT)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_chunked_prefill_and_decode_match_transformers(tiny_dir):
    # Chunks and decode steps reach far past the 5-token window of the local layers.
    chunks = [7, 6, 1, 1, 5, 1, 1, 1, 3, 1, 1, 1]
    ours = stepwise_logits(load_ours(tiny_dir), PROMPT[:29], chunks)
    torch.testing.assert_close(ours, reference_logits(tiny_dir, PROMPT), atol=1e-4, rtol=1e-4)


def test_local_layers_see_only_their_window(tiny_dir, tmp_path):
    model = load_ours(tiny_dir)
    assert [s.sliding_window for s in model.kv_cache_specs()] == [5, None, 5]
    wide_window = make_tiny_gemma3(tmp_path, sliding_window=64)
    full = stepwise_logits(load_ours(wide_window), PROMPT, [len(PROMPT)])
    windowed = stepwise_logits(model, PROMPT, [len(PROMPT)])
    # Same weights (same seed): only the window differs, and it changes late positions only.
    torch.testing.assert_close(full[:5], windowed[:5], atol=1e-5, rtol=1e-5)
    assert (full[-1] - windowed[-1]).abs().max() > 1e-2


def test_final_logits_are_soft_capped(tiny_dir):
    logits = stepwise_logits(load_ours(tiny_dir), PROMPT, [len(PROMPT)])
    assert logits.abs().max() < 20.0  # final_logit_softcapping=20


def test_embeddings_are_tied(tiny_dir):
    model = load_ours(tiny_dir)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_older_config_spelling_gives_the_same_model():
    new = {
        "num_hidden_layers": 12,
        "num_attention_heads": 4,
        "vocab_size": 10,
        "hidden_size": 8,
        "intermediate_size": 16,
        "head_dim": 4,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    }
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    old.update(rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window_pattern=6)
    a, b = gemma3_args(new), gemma3_args(old)
    assert a.layer_types == b.layer_types
    assert [i for i, t in enumerate(a.layer_types) if t == "full_attention"] == [5, 11]
    assert a.rope["full_attention"]["rope_theta"] == b.rope["full_attention"]["rope_theta"]
    assert a.rope["sliding_attention"]["rope_theta"] == b.rope["sliding_attention"]["rope_theta"]
    # A multimodal config nests the same fields under text_config.
    assert gemma3_args({"text_config": new}) == a


def test_bad_layer_types_are_named(tiny_dir):
    config = dict(read_hf_config(tiny_dir), layer_types=["sliding_attention", "chunked"])
    with pytest.raises(ModelLoadError, match="chunked"):
        Gemma3ForCausalLM(config, torch.float32)


def test_multimodal_checkpoint_names_load_as_text(tiny_dir):
    from localseek.models.gemma3 import Gemma3ForConditionalGeneration

    source = open_hf_dir(tiny_dir)
    renamed = [(n.replace("model.", "model.language_model.", 1), t) for n, t in source.weights()]
    renamed.append(("model.vision_tower.patch.weight", torch.zeros(2)))
    model = Gemma3ForConditionalGeneration(source.config, torch.float32)
    model.load_weights(renamed)
    ours = stepwise_logits(model.eval(), PROMPT, [len(PROMPT)])
    torch.testing.assert_close(ours, reference_logits(tiny_dir, PROMPT), atol=1e-4, rtol=1e-4)
