"""Compares endpoints' scores, prints the table, and exports the result as Prometheus gauges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from localseek.ops.eval.runner import Answers
from localseek.ops.eval.scores import METRICS, Scores


@dataclass(frozen=True)
class EvalResult:
    golden: str  # the golden set's file name
    answers: tuple[Answers, ...]  # baseline first
    scores: tuple[Scores, ...]
    threshold: float  # points a candidate may lose on any metric

    def regressions(self) -> list[str]:
        """Metrics where the candidate is worse than the baseline by more than the threshold."""
        if len(self.scores) < 2:
            return []
        base, cand = self.scores[0], self.scores[1]
        out = []
        for m in METRICS:
            b, c = base.get(m), cand.get(m)
            if b is not None and c is not None and b - c > self.threshold:
                out.append(m)
        return out


def format_table(result: EvalResult) -> str:
    labels = [f"{a.endpoint.label} ({a.model})" for a in result.answers]
    rows = [["metric", *labels] + (["delta"] if len(labels) == 2 else [])]
    regressed = set(result.regressions())
    for m in METRICS:
        values = [s.get(m) for s in result.scores]
        row = [m, *("n/a" if v is None else f"{v:.2f}" for v in values)]
        if len(values) == 2:
            b, c = values
            delta = "n/a" if b is None or c is None else f"{c - b:+.2f}"
            row.append(delta + ("  REGRESSION" if m in regressed else ""))
        rows.append(row)
    rows.append(["answered", *(f"{s.answered}/{s.total}" for s in result.scores)])
    rows.append(["seconds", *(f"{a.seconds:.1f}" for a in result.answers)])
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(rows[0]))]
    lines = [f"golden set: {result.golden} ({result.scores[0].total} items)"]
    for r in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    if len(result.scores) == 2:
        verdict = (
            f"candidate worse than baseline by more than {result.threshold} points on: "
            + ", ".join(sorted(regressed))
            if regressed
            else f"no regression beyond {result.threshold} points"
        )
        lines.append(verdict)
    return "\n".join(lines)


def gauges(result: EvalResult) -> CollectorRegistry:
    """localseek_eval_score{endpoint, model, metric, golden}, localseek_eval_regression{golden}."""
    registry = CollectorRegistry()
    score = Gauge(
        "localseek_eval_score",
        "Golden-set score on a 0-100 scale.",
        ["endpoint", "model", "metric", "golden"],
        registry=registry,
    )
    answered = Gauge(
        "localseek_eval_answered_ratio",
        "Fraction of golden prompts the endpoint answered.",
        ["endpoint", "model", "golden"],
        registry=registry,
    )
    for a, s in zip(result.answers, result.scores):
        for m in METRICS:
            value = s.get(m)
            if value is not None:
                score.labels(a.endpoint.label, a.model, m, result.golden).set(value)
        answered.labels(a.endpoint.label, a.model, result.golden).set(s.answered / s.total)
    if len(result.scores) == 2:
        regression = Gauge(
            "localseek_eval_regression",
            "1 when the candidate is worse than the baseline beyond the threshold.",
            ["golden"],
            registry=registry,
        )
        regression.labels(result.golden).set(1 if result.regressions() else 0)
    return registry


def export(
    result: EvalResult, *, textfile: str | Path | None = None, pushgateway: str | None = None
) -> None:
    """Write the gauges for node-exporter's textfile collector and/or push them."""
    registry = gauges(result)
    if textfile:
        write_to_textfile(str(textfile), registry)
    if pushgateway:
        push_to_gateway(pushgateway, job="localseek_eval", registry=registry)


def request_errors(answers: Sequence[Answers]) -> list[str]:
    """One line per request error (at most three per endpoint), for stderr."""
    lines = []
    for a in answers:
        lines += [f"{a.endpoint.label}: {e}" for e in a.errors[:3]]
    return lines
