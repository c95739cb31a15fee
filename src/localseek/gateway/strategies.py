"""Balancing strategies: how one upstream is chosen among the usable ones of a tier.

Each is a small object behind one method, `choose(candidates, request)`; the balancer (tiers,
eligibility, circuits, slots) never knows which one it holds. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from localseek.gateway.affinity import AffinityIndex
from localseek.gateway.route import RouteRequest
from localseek.gateway.upstream import Upstream

LOAD_SLACK = 1.0  # requests per weight unit an upstream may lead the least loaded by


class Strategy(Protocol):
    def choose(self, candidates: Sequence[Upstream], req: RouteRequest) -> Upstream:
        """One of `candidates` (never empty, all usable) for `req`."""
        ...


class RoundRobin:
    """Smooth weighted round robin (nginx's): over any window the split follows the weights,
    and no upstream gets two turns in a row that it would not get in the long run."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def choose(self, candidates: Sequence[Upstream], req: RouteRequest) -> Upstream:
        if len(candidates) == 1:
            return candidates[0]
        total = 0
        for u in candidates:
            self._current[u.name] = self._current.get(u.name, 0.0) + u.config.weight
            total += u.config.weight
        chosen = max(candidates, key=lambda u: self._current[u.name])
        self._current[chosen.name] -= total
        return chosen


class LeastLoad:
    """The upstreams whose load per unit of weight is within one request of the least loaded,
    split by weighted round robin: even load follows the weights exactly, and a replica that
    slows down (its load piles up) gets no new work until it drains."""

    def __init__(self) -> None:
        self._tie_break = RoundRobin()

    def choose(self, candidates: Sequence[Upstream], req: RouteRequest) -> Upstream:
        unit = min(u.config.weight for u in candidates)  # the lightest weight is one unit
        scores = [u.load() * unit / u.config.weight for u in candidates]
        least = min(scores)
        best = [u for u, s in zip(candidates, scores, strict=True) if s <= least + LOAD_SLACK]
        return self._tie_break.choose(best, req)


class Affinity:
    """Requests with the same affinity key (a long shared prefix, or a session's `user`) go to
    the upstream the key used last, while it is a candidate, so its prefix cache is reused;
    others, and keys seen first, go where `inner` chooses. The index is a bounded LRU."""

    def __init__(self, inner: Strategy, max_entries: int):
        self.inner = inner
        self.index = AffinityIndex(max_entries)

    def choose(self, candidates: Sequence[Upstream], req: RouteRequest) -> Upstream:
        if req.affinity_key is None:
            return self.inner.choose(candidates, req)
        name = self.index.get(req.affinity_key)
        for u in candidates:
            if u.name == name:
                return u
        chosen = self.inner.choose(candidates, req)
        self.index.put(req.affinity_key, chosen.name)
        return chosen


STRATEGIES = {"least_load": LeastLoad, "round_robin": RoundRobin}


def build_strategy(name: str, affinity_max_entries: int) -> Affinity:
    """The configured strategy, behind affinity (a no-op for requests without a key)."""
    return Affinity(STRATEGIES[name](), affinity_max_entries)
