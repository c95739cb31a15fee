"""Per-token cost of JSON-schema token masks at batch 16: llguidance vs xgrammar vs outlines-core.

Each library compiles one JSON schema for the demo model's tokenizer (Gemma 3, 262,144 tokens),
then drives 16 independent matchers for `--steps` steps: compute each row's allowed-token mask,
apply it to a [16, V] float32 logits tensor, take each row's argmax over random logits, and
advance the matchers with the chosen tokens. It prints the tokenizer + schema compile time and
the milliseconds per step spent computing the 16 masks and applying them (with advancing the
matchers): the overhead a constrained batch of 16 adds per decoded token.

    python benchmarks/grammar_mask.py                 # all three libraries installed
    python benchmarks/grammar_mask.py --steps 32 --libs llguidance

xgrammar and outlines-core are measured only if installed (neither is a dependency). The
`localseek` row is the engine's own GrammarMasks.masked (llguidance; mask and apply together).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
        },
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "active"],
}
BATCH = 16


def demo_tokenizer():
    from localseek.weights.default_model import default_model_path
    from localseek.weights.loader import open_model

    return open_model(default_model_path()).tokenizer


def run_llguidance(tok, vocab: int, steps: int) -> tuple[float, float]:
    import llguidance

    t0 = time.perf_counter()
    lltok = llguidance.LLTokenizer(
        tok.backend.to_str(), n_vocab=vocab, eos_token=sorted(tok.eos_token_ids)[0]
    )
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA))
    matchers = [llguidance.LLMatcher(lltok, grammar) for _ in range(BATCH)]
    compile_s = time.perf_counter() - t0
    executor = llguidance.LLExecutor()
    words = (vocab + 31) // 32
    bitmask = np.full((BATCH, words), -1, dtype=np.int32)

    def mask(logits: torch.Tensor) -> None:
        executor.unsafe_compute_mask_ptr(
            [(m, i) for i, m in enumerate(matchers)], bitmask.ctypes.data, words * 4, BATCH
        )

    def apply(logits: torch.Tensor) -> None:
        banned = np.unpackbits(np.invert(bitmask.view(np.uint8)), axis=1, bitorder="little")
        logits.masked_fill_(torch.from_numpy(banned).view(torch.bool)[:, :vocab], float("-inf"))

    def advance(chosen: list[int]) -> None:
        for m, t in zip(matchers, chosen, strict=True):
            m.consume_token(t)

    return compile_s, *_time_steps(mask, apply, advance, vocab, steps)


def run_xgrammar(tok, vocab: int, steps: int) -> tuple[float, float]:
    import xgrammar
    from transformers import PreTrainedTokenizerFast

    t0 = time.perf_counter()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok.backend)
    info = xgrammar.TokenizerInfo.from_huggingface(
        hf, vocab_size=vocab, stop_token_ids=sorted(tok.eos_token_ids)
    )
    compiled = xgrammar.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA))
    matchers = [xgrammar.GrammarMatcher(compiled) for _ in range(BATCH)]
    compile_s = time.perf_counter() - t0
    batch = xgrammar.BatchGrammarMatcher()
    bitmask = xgrammar.allocate_token_bitmask(BATCH, vocab)

    def mask(logits: torch.Tensor) -> None:
        batch.batch_fill_next_token_bitmask(matchers, bitmask)

    def apply(logits: torch.Tensor) -> None:
        xgrammar.apply_token_bitmask_inplace(logits, bitmask)

    def advance(chosen: list[int]) -> None:
        for m, t in zip(matchers, chosen, strict=True):
            m.accept_token(t)

    return compile_s, *_time_steps(mask, apply, advance, vocab, steps)


def run_outlines_core(tok, vocab: int, steps: int) -> tuple[float, float]:
    from outlines_core import Guide, Index, Vocabulary, json_schema

    t0 = time.perf_counter()
    eos = sorted(tok.eos_token_ids)[0]
    mapping: dict[str, list[int]] = {}
    for token_id in range(tok.backend.get_vocab_size()):
        piece = tok.id_to_token(token_id)
        if piece is not None and token_id != eos:
            mapping.setdefault(piece, []).append(token_id)
    index = Index(json_schema.build_regex_from_schema(json.dumps(SCHEMA)), Vocabulary(eos, mapping))
    guides = [Guide(index) for _ in range(BATCH)]
    compile_s = time.perf_counter() - t0
    banned = torch.ones(BATCH, vocab, dtype=torch.bool)

    def mask(logits: torch.Tensor) -> None:
        banned.fill_(True)
        for row, guide in enumerate(guides):
            banned[row, guide.get_tokens()] = False

    def apply(logits: torch.Tensor) -> None:
        logits.masked_fill_(banned, float("-inf"))

    def advance(chosen: list[int]) -> None:
        for guide, t in zip(guides, chosen, strict=True):
            if not guide.is_finished():
                guide.advance(t)

    return compile_s, *_time_steps(mask, apply, advance, vocab, steps)


def run_localseek(tok, vocab: int, steps: int) -> tuple[float, float, float]:
    """What the engine runs: GrammarMasks.masked (llguidance) on 16 constrained rows."""
    from localseek.engine.grammar import GrammarMasks, json_schema_grammar
    from localseek.engine.sequence import Sequence
    from localseek.sampling_params import SamplingParams

    t0 = time.perf_counter()
    masks = GrammarMasks(tok, vocab)
    params = SamplingParams(grammar=json_schema_grammar(SCHEMA))
    seqs = [Sequence(f"r{i}", [1], params) for i in range(BATCH)]
    masks.masked(torch.zeros(BATCH, vocab), seqs, copy=False)  # builds tokenizer + matchers
    compile_s = time.perf_counter() - t0

    def mask(logits: torch.Tensor) -> None:
        masks.masked(logits, seqs, copy=False)

    def advance(chosen: list[int]) -> None:
        masks.advance(seqs, chosen)
        for seq, token in zip(seqs, chosen, strict=True):
            seq.output_token_ids.append(token)

    return compile_s, *_time_steps(mask, lambda logits: None, advance, vocab, steps)


def _time_steps(
    mask: Callable[[torch.Tensor], None],
    apply: Callable[[torch.Tensor], None],
    advance: Callable[[list[int]], None],
    vocab: int,
    steps: int,
) -> tuple[float, float]:
    """Mean seconds per step computing the 16 masks, and applying them (+ advancing)."""
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(BATCH, vocab, generator=generator) for _ in range(steps)]
    mask_s = apply_s = 0.0
    for row_logits in logits:
        t0 = time.perf_counter()
        mask(row_logits)
        t1 = time.perf_counter()
        apply(row_logits)
        advance(row_logits.argmax(dim=-1).tolist())
        mask_s += t1 - t0
        apply_s += time.perf_counter() - t1
    return mask_s / steps, apply_s / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument(
        "--libs", nargs="+", default=["llguidance", "xgrammar", "outlines-core", "localseek"]
    )
    args = parser.parse_args()
    tok = demo_tokenizer()
    vocab = len(tok)
    runners = {
        "llguidance": run_llguidance,
        "xgrammar": run_xgrammar,
        "outlines-core": run_outlines_core,
        "localseek": run_localseek,
    }
    print(
        f"vocabulary {vocab}, batch {BATCH}, {args.steps} steps, torch threads {torch.get_num_threads()}"
    )
    print(f"{'library':<14} {'compile s':>10} {'mask ms/step':>13} {'apply ms/step':>14}")
    for name in args.libs:
        try:
            compile_s, mask_s, apply_s = runners[name](tok, vocab, args.steps)
        except ImportError as exc:
            print(f"{name:<14} not installed ({exc.name})")
            continue
        print(f"{name:<14} {compile_s:>10.2f} {mask_s * 1e3:>13.2f} {apply_s * 1e3:>14.2f}")


if __name__ == "__main__":
    main()
