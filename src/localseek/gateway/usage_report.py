"""`localseek usage`: the usage ledger per tenant and model over a time range, as a table,
CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

from localseek.errors import ConfigError
from localseek.gateway.usage_ledger import SqliteLedger, UsageRow

FORMATS = ("table", "csv", "json")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """Unix seconds from `24h`/`7d`/`30m` ago, an ISO date or datetime (UTC unless it says
    otherwise), or `now`; None stays None (an open end)."""
    if text is None:
        return None
    now = time.time() if now is None else now
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"time {text!r} is not understood: use 24h, 7d, 30m, now, or an ISO date "
            "such as 2026-12-01 or 2026-12-01T08:00"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_usage(path: str | Path, since: float | None, until: float | None) -> list[UsageRow]:
    """The ledger's totals per tenant and model; the file must exist (no empty one is made)."""
    if not Path(path).is_file():
        raise ConfigError(
            f"no usage ledger at {str(path)!r}: set usage.path in the gateway config and "
            "let the gateway serve some requests"
        )
    ledger = SqliteLedger(path)
    try:
        return ledger.summary(since, until)
    finally:
        ledger.close()


def _totals(rows: list[UsageRow]) -> UsageRow:
    sums = {f.name: sum(getattr(r, f.name) for r in rows) for f in fields(UsageRow)[2:]}
    return UsageRow("TOTAL", "", **sums)


def format_usage(rows: list[UsageRow], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    names = [f.name for f in fields(UsageRow)]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_cells(r) for r in rows])
        return out.getvalue().rstrip("\n")
    table = [names] + [_cells(r) for r in rows]
    if rows:
        table.append(_cells(_totals(rows)))
    widths = [max(len(row[i]) for row in table) for i in range(len(names))]
    return "\n".join(
        "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in table
    )


def _cells(row: UsageRow) -> list[str]:
    out = []
    for f in fields(UsageRow):
        value = getattr(row, f.name)
        out.append(f"{value:.6f}" if isinstance(value, float) else str(value))
    return out
