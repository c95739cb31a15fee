"""Choosing an upstream: tiers (primaries, backups, cloud), weighted least load, affinity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from localseek.gateway.affinity import AffinityIndex
from localseek.gateway.config import BalancerConfig
from localseek.gateway.upstream import Upstream

_LOAD_SLACK = 1.0  # requests per weight unit an upstream may lead the least loaded by


@dataclass(frozen=True)
class RouteRequest:
    """What the balancer needs to know about a request."""

    model: str
    affinity_key: str | None = None
    exclude: frozenset[str] = frozenset()  # upstreams already tried by this request
    needs_continuation: bool = False  # only upstreams able to continue a partial answer


class Balancer:
    """Picks an upstream and counts the request as in flight on it.

    Within a tier: smooth weighted round robin among the upstreams whose load per unit of weight
    is within one request of the least loaded. Under even load the split follows the weights
    exactly; a replica that slows down (its load piles up) stops getting new work until it
    drains, which is what least-load is for.
    Backups are used only when no primary can take the request; cloud upstreams only through
    `pick_cloud`, which the caller reaches only for cloud-eligible requests.
    """

    def __init__(self, upstreams: Sequence[Upstream], config: BalancerConfig):
        local = [u for u in upstreams if not u.is_cloud]
        cloud = [u for u in upstreams if u.is_cloud]
        self.local_tiers = [
            [u for u in local if not u.config.backup],
            [u for u in local if u.config.backup],
        ]
        self.cloud_tiers = [
            [u for u in cloud if not u.config.backup],
            [u for u in cloud if u.config.backup],
        ]
        self.affinity = AffinityIndex(config.affinity_max_entries)
        self._current = {u.name: 0.0 for u in upstreams}  # smooth weighted round robin state

    def pick_local(self, req: RouteRequest, *, last_resort: bool = False) -> Upstream | None:
        """A local upstream with room, or None; with last_resort, ignore open circuits.

        last_resort keeps an all-open local tier from refusing everything: the upstream whose
        circuit reopens soonest gets the request as a trial (it fails fast if really down).
        """
        chosen = self._pick(self.local_tiers, req)
        if chosen is None and last_resort:
            eligible = [u for tier in self.local_tiers for u in tier if self._eligible(u, req)]
            if eligible and not any(u.circuit.allows() for u in eligible):
                room = [u for u in eligible if not u.saturated()]
                if room:
                    chosen = min(room, key=lambda u: u.circuit.open_until)
                    chosen.acquire()
        return chosen

    def pick_cloud(self, req: RouteRequest) -> Upstream | None:
        return self._pick(self.cloud_tiers, req)

    def has_cloud(self, req: RouteRequest) -> bool:
        return any(self._eligible(u, req) for tier in self.cloud_tiers for u in tier)

    def has_local(self, req: RouteRequest) -> bool:
        return any(self._eligible(u, req) for tier in self.local_tiers for u in tier)

    def serves(self, model: str) -> bool:
        return any(
            u.config.serves(model) for tier in self.local_tiers + self.cloud_tiers for u in tier
        )

    def _pick(self, tiers: list[list[Upstream]], req: RouteRequest) -> Upstream | None:
        for tier in tiers:
            candidates = [u for u in tier if self._eligible(u, req) and u.usable()]
            if candidates:
                chosen = self._choose(candidates, req)
                chosen.acquire()
                return chosen
        return None

    def _eligible(self, u: Upstream, req: RouteRequest) -> bool:
        if u.name in req.exclude or not u.config.serves(req.model):
            return False
        return not (req.needs_continuation and u.config.continuation == "none")

    def _choose(self, candidates: list[Upstream], req: RouteRequest) -> Upstream:
        if req.affinity_key is not None:
            name = self.affinity.get(req.affinity_key)
            for u in candidates:
                if u.name == name:
                    return u
        # Load per unit of weight, the lightest weight counting as one unit.
        unit = min(u.config.weight for u in candidates)
        scores = [u.load() * unit / u.config.weight for u in candidates]
        least = min(scores)
        best = [u for u, s in zip(candidates, scores, strict=True) if s <= least + _LOAD_SLACK]
        chosen = best[0]
        if len(best) > 1:
            total = 0
            for u in best:
                self._current[u.name] += u.config.weight
                total += u.config.weight
            chosen = max(best, key=lambda u: self._current[u.name])
            self._current[chosen.name] -= total
        if req.affinity_key is not None:
            self.affinity.put(req.affinity_key, chosen.name)
        return chosen
