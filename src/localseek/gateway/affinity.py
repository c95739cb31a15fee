"""Session and prefix affinity: a bounded LRU map from a request's key to the replica it used."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from localseek.gateway.config import BalancerConfig


class AffinityIndex:
    """Key -> upstream name, at most `max_entries` (least recently used evicted first)."""

    def __init__(self, max_entries: int):
        self._max = max_entries
        self._map: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def get(self, key: str) -> str | None:
        name = self._map.get(key)
        if name is not None:
            self._map.move_to_end(key)
        return name

    def put(self, key: str, name: str) -> None:
        self._map[key] = name
        self._map.move_to_end(key)
        while len(self._map) > self._max:
            self._map.popitem(last=False)


def affinity_key(body: dict[str, Any], config: BalancerConfig) -> str | None:
    """The key that should route this request to the same replica as its predecessors.

    `user` groups a session; the first affinity_min_prefix_chars characters of the prompt group
    requests that share a long prefix (a system prompt, a document), so the replica's prefix
    cache is reused. Short prompts have no prefix key: they gain nothing from stickiness.
    """
    mode = config.affinity
    if mode == "none":
        return None
    user = body.get("user")
    if mode in ("user", "user_or_prefix") and isinstance(user, str) and user:
        return "u:" + hashlib.sha256(user.encode()).hexdigest()[:32]
    if mode in ("prefix", "user_or_prefix"):
        text = _prompt_text(body)
        if len(text) >= config.affinity_min_prefix_chars:
            head = text[: config.affinity_min_prefix_chars].encode()
            return "p:" + hashlib.sha256(head).hexdigest()[:32]
    return None


def _prompt_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append("\x00")
        return "".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""
