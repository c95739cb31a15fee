"""Runs `localseek eval`: load the golden set, ask each endpoint, score, report, export."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from localseek.ops.eval.golden import default_golden_path, load_golden
from localseek.ops.eval.report import EvalResult, export, format_table, request_errors
from localseek.ops.eval.runner import Endpoint, collect
from localseek.ops.eval.scores import score


@dataclass(frozen=True)
class EvalOptions:
    baseline: Endpoint
    candidate: Endpoint | None = None
    golden: str | None = None  # None: the shipped golden set
    threshold: float = 2.0  # points (0-100 scale) the candidate may lose on any metric
    concurrency: int = 4
    textfile: str | None = None
    pushgateway: str | None = None


def run_eval(options: EvalOptions) -> tuple[EvalResult, int]:
    """The result and the exit status: 1 when the candidate regressed, else 0."""
    # httpx logs every request at INFO: one line per prompt would bury the table.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    path = Path(options.golden) if options.golden else default_golden_path()
    items = load_golden(path)
    endpoints = [options.baseline] + ([options.candidate] if options.candidate else [])
    answers = tuple(collect(e, items, concurrency=options.concurrency) for e in endpoints)
    scores = tuple(score(items, a.texts) for a in answers)
    result = EvalResult(path.name, answers, scores, options.threshold)
    print(format_table(result))
    for line in request_errors(answers):
        print(line, file=sys.stderr)
    export(result, textfile=options.textfile, pushgateway=options.pushgateway)
    return result, 1 if result.regressions() else 0
