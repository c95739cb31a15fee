"""Golden sets: JSONL files of prompts and the answers they should get."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from localseek.errors import ConfigError

CHECKS = ("text", "exact", "json")
DEFAULT_GOLDEN = "golden.jsonl"


@dataclass(frozen=True)
class GoldenItem:
    """One prompt. `check`: text (BLEU/chrF only), exact (also exact match), json (also JSON
    validity: the answer must parse as JSON)."""

    id: str
    messages: tuple[dict[str, str], ...]
    reference: str
    check: str = "text"
    max_tokens: int = 128


def default_golden_path() -> Path:
    """The small golden set shipped with localseek (ops/data/golden.jsonl)."""
    return Path(str(resources.files("localseek.ops").joinpath("data", DEFAULT_GOLDEN)))


def load_golden(path: str | Path) -> list[GoldenItem]:
    """Parse a golden JSONL file; errors name the line and the field."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read golden set {str(path)!r}: {exc.strerror}") from exc
    items = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            items.append(_item(json.loads(line) if _is_json(line) else None, f"{path}:{number}"))
    if not items:
        raise ConfigError(f"golden set {str(path)!r} has no items")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"golden set {str(path)!r}: item ids must be unique")
    return items


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _item(data: Any, where: str) -> GoldenItem:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: each line must be a JSON object")
    unknown = set(data) - {"id", "messages", "prompt", "reference", "check", "max_tokens"}
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if "prompt" in data:
        messages = ({"role": "user", "content": str(data["prompt"])},)
    elif isinstance(data.get("messages"), list) and data["messages"]:
        messages = tuple(data["messages"])
    else:
        raise ConfigError(f"{where}: give `prompt` (a string) or `messages` (a list)")
    if not isinstance(data.get("reference"), str):
        raise ConfigError(f"{where}: `reference` (a string) is required")
    check = data.get("check", "text")
    if check not in CHECKS:
        raise ConfigError(f"{where}: check must be one of {CHECKS}, got {check!r}")
    max_tokens = data.get("max_tokens", 128)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"{where}: max_tokens must be a positive integer")
    return GoldenItem(str(data.get("id", where)), messages, data["reference"], check, max_tokens)
