"""Scores of a set of answers against references: BLEU, chrF, exact match, JSON validity.

All on a 0-100 scale, so one regression threshold (in points) applies to each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from localseek.errors import ConfigError
from localseek.ops.eval.golden import GoldenItem

METRICS = ("bleu", "chrf", "exact_match", "json_valid")


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as exc:
        raise ConfigError(
            "localseek eval needs sacrebleu: pip install 'localseek[eval]' (or sacrebleu)"
        ) from exc
    return sacrebleu


def normalize(text: str) -> str:
    """Lower case, outer punctuation and whitespace gone, inner whitespace collapsed."""
    return re.sub(r"\s+", " ", text.strip().strip(".!?\"'`").strip()).lower()


def strip_fences(text: str) -> str:
    """The body of a ```json fenced block, if the answer is one."""
    m = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return m.group(1) if m else text


def is_json(text: str) -> bool:
    try:
        json.loads(strip_fences(text))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Scores:
    """One endpoint's scores; exact_match / json_valid are None when no item asks for them."""

    bleu: float
    chrf: float
    exact_match: float | None
    json_valid: float | None
    answered: int  # items that got an answer (errors score as empty answers)
    total: int

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)


def score(items: Sequence[GoldenItem], answers: Sequence[str | None]) -> Scores:
    """Corpus BLEU and chrF over every item; exact match and JSON validity over the items
    whose check asks for them. A failed request (None) counts as an empty answer."""
    sb = _sacrebleu()
    hyps = [a or "" for a in answers]
    refs = [[i.reference for i in items]]
    exact = [
        normalize(h) == normalize(i.reference) for i, h in zip(items, hyps) if i.check == "exact"
    ]
    valid = [is_json(h) for i, h in zip(items, hyps) if i.check == "json"]
    return Scores(
        bleu=sb.corpus_bleu(hyps, refs).score,
        chrf=sb.corpus_chrf(hyps, refs).score,
        exact_match=100.0 * sum(exact) / len(exact) if exact else None,
        json_valid=100.0 * sum(valid) / len(valid) if valid else None,
        answered=sum(a is not None for a in answers),
        total=len(items),
    )
