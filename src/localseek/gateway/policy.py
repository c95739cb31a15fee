"""Data-sensitivity policy: decides whether a request must stay on local upstreams."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from localseek.gateway.config import PolicyConfig
from localseek.gateway.detectors import DETECTORS
from localseek.gateway.normalize import TextViews, nfkc, unspaced

SENSITIVE_HEADER = "x-data-class"


@dataclass(frozen=True)
class Classification:
    """The verdict for one request; `reason` is a bounded label (safe as a metric label)."""

    local_only: bool
    reason: str  # tenant | header | default | detector:<name> | pattern | keyword | none


class DataPolicy:
    """Local-only if the tenant is, if the header says sensitive, or if a detector fires.

    Every string in the request body is scanned (system, user, assistant and tool messages, the
    prompt, tool definitions), because sensitive data in a system prompt leaks just as surely;
    so are object keys and numbers (an ID used as a key, a phone number sent as a number).
    Rules read normalized text (normalize.py): full-width forms, grouped digits, "(at)", and
    letters spaced out are caught as their plain spelling is.
    """

    def __init__(self, config: PolicyConfig):
        self._config = config
        self._detectors = [(name, DETECTORS[name]) for name in config.detectors]
        self._patterns = [re.compile(p) for p in config.patterns]
        self._keywords = [unspaced(nfkc(k)).lower() for k in config.keywords if k]

    def classify(
        self, body: dict[str, Any], *, tenant_local_only: bool, data_class: str | None
    ) -> Classification:
        if tenant_local_only:
            return Classification(True, "tenant")
        label = (data_class or "").strip().lower()
        if label == "sensitive":
            return Classification(True, "header")
        found = self.scan(body)
        if found is not None:
            return Classification(True, found)
        if self._config.default_local_only and label != "public":
            return Classification(True, "default")
        return Classification(False, "none")

    def scan(self, body: dict[str, Any]) -> str | None:
        """The label of the first rule that finds sensitive content, or None."""
        for text in _strings(body):
            views = TextViews(text)
            for name, detect in self._detectors:
                if detect(views):
                    return f"detector:{name}"
            if any(p.search(views.text) for p in self._patterns):
                return "pattern"
            if self._keywords and any(k in views.words for k in self._keywords):
                return "keyword"
        return None


def _strings(value: Any) -> Iterator[str]:
    """Every string, key and number inside a JSON value (iterative: depth is not a risk)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield str(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield str(item)
