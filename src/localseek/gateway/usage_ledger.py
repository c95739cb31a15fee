"""The gateway's usage ledger: one SQLite row per answered or refused request, for `localseek usage`.

Prometheus counters say what is happening now; the ledger answers "what did tenant X use last
month, and what did it cost or save" after restarts. Rows are written on the event loop: one
small INSERT in WAL mode with synchronous=NORMAL costs tens of microseconds, less than parsing
the request did. Several gateways on one host may share the file (SQLite locks it).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from localseek.errors import ConfigError

logger = logging.getLogger(__name__)

OUTCOMES = ("local", "cloud", "cache", "refused")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    at REAL NOT NULL,              -- unix seconds
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,         -- local | cloud | cache | refused
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,        -- paid to a cloud upstream
    saved_usd REAL NOT NULL        -- the cloud price of an answer served locally or from cache
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at);
"""


@dataclass(frozen=True)
class UsageEvent:
    """One request's outcome as the ledger keeps it."""

    tenant: str
    model: str
    outcome: str  # one of OUTCOMES
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0


@dataclass(frozen=True)
class UsageRow:
    """Totals for one (tenant, model) over a time range."""

    tenant: str
    model: str
    requests: int
    local_tokens: int
    cloud_tokens: int
    cache_hits: int
    cache_tokens: int
    refused: int
    cost_usd: float
    saved_usd: float


class Ledger(Protocol):
    def record(self, event: UsageEvent) -> None: ...

    def close(self) -> None: ...


class NullLedger:
    """The ledger when `usage.path` is not configured: records nothing."""

    def record(self, event: UsageEvent) -> None:
        pass

    def close(self) -> None:
        pass


class SqliteLedger:
    """The ledger in one SQLite file."""

    def __init__(self, path: str | Path, clock=time.time):
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"usage ledger {str(path)!r} cannot be opened: {exc}") from exc
        self._clock = clock

    def record(self, event: UsageEvent) -> None:
        """Append one row; a failing disk is logged, never turned into a failed request."""
        assert event.outcome in OUTCOMES, event.outcome
        row = (
            self._clock(),
            event.tenant,
            event.model,
            event.outcome,
            event.prompt_tokens,
            event.completion_tokens,
            event.cost_usd,
            event.saved_usd,
        )
        try:
            with self._db:
                self._db.execute("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        except sqlite3.Error as exc:
            logger.warning("usage ledger: could not record a %s request: %s", event.outcome, exc)

    def summary(self, since: float | None = None, until: float | None = None) -> list[UsageRow]:
        """Totals per (tenant, model) for rows with since <= at < until, sorted by tenant, model."""
        tokens = "prompt_tokens + completion_tokens"
        rows = self._db.execute(
            f"""
            SELECT tenant, model, SUM(outcome != 'refused'),
                   SUM(CASE WHEN outcome = 'local' THEN {tokens} ELSE 0 END),
                   SUM(CASE WHEN outcome = 'cloud' THEN {tokens} ELSE 0 END),
                   SUM(outcome = 'cache'),
                   SUM(CASE WHEN outcome = 'cache' THEN {tokens} ELSE 0 END),
                   SUM(outcome = 'refused'), SUM(cost_usd), SUM(saved_usd)
            FROM usage WHERE at >= ? AND at < ?
            GROUP BY tenant, model ORDER BY tenant, model
            """,
            (since if since is not None else float("-inf"), until or float("inf")),
        ).fetchall()
        return [UsageRow(*r) for r in rows]

    def close(self) -> None:
        self._db.close()


def open_ledger(path: str | None) -> Ledger:
    """The SQLite ledger at `path`, or a NullLedger when no path is configured."""
    return SqliteLedger(path) if path else NullLedger()
