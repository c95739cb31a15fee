"""Golden-set parsing and the scores (sacrebleu BLEU/chrF, exact match, JSON validity)."""

from __future__ import annotations

import json

import pytest

from localseek.errors import ConfigError
from localseek.ops.eval.golden import GoldenItem, default_golden_path, load_golden
from localseek.ops.eval.scores import is_json, normalize, score


def item(reference: str, check: str = "text") -> GoldenItem:
    return GoldenItem("x", ({"role": "user", "content": "q"},), reference, check)


def test_shipped_golden_set_parses_and_uses_every_check():
    items = load_golden(default_golden_path())
    assert len(items) >= 10
    assert {i.check for i in items} == {"text", "exact", "json"}
    for i in items:
        if i.check == "json":
            assert is_json(i.reference), i.id


def test_perfect_answers_score_100_and_wrong_ones_less():
    items = [item("Paris", "exact"), item('{"a": 1}', "json"), item("The sky is blue today.")]
    perfect = score(items, ["Paris", '{"a": 1}', "The sky is blue today."])
    assert perfect.bleu == pytest.approx(100.0) and perfect.chrf == pytest.approx(100.0)
    assert perfect.exact_match == 100.0 and perfect.json_valid == 100.0
    # Exact match forgives case and a final full stop; JSON may come in a fenced block.
    lenient = score(items, ["paris.", '```json\n{"a": 1}\n```', "The sky is blue today."])
    assert lenient.exact_match == 100.0 and lenient.json_valid == 100.0
    wrong = score(items, ["Lyon", "{a: 1}", None])
    assert wrong.bleu < 50 and wrong.chrf < 40
    assert wrong.exact_match == 0.0 and wrong.json_valid == 0.0
    assert wrong.answered == 2 and wrong.total == 3


def test_scores_without_exact_or_json_items_are_not_applicable():
    s = score([item("a b c d")], ["a b c d"])
    assert s.exact_match is None and s.json_valid is None


def test_normalize():
    assert normalize("  Paris. ") == normalize("paris") == "paris"


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "JSON object"),
        (json.dumps({"reference": "r"}), "prompt"),
        (json.dumps({"prompt": "p"}), "reference"),
        (json.dumps({"prompt": "p", "reference": "r", "check": "bleu"}), "check must be"),
        (json.dumps({"prompt": "p", "reference": "r", "colour": 1}), "unknown field 'colour'"),
    ],
)
def test_bad_golden_lines_name_the_problem(tmp_path, line, message):
    path = tmp_path / "g.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_golden(path)
    assert "g.jsonl:1" in err.value.message
