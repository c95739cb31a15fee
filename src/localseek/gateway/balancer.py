"""Choosing an upstream: tiers (primaries, backups, cloud), weighted least load, affinity."""

from __future__ import annotations

from collections.abc import Sequence

from localseek.gateway.affinity import AffinityIndex
from localseek.gateway.config import BalancerConfig
from localseek.gateway.route import RouteRequest
from localseek.gateway.strategies import build_strategy
from localseek.gateway.upstream import Upstream

__all__ = ["Balancer", "RouteRequest"]


class Balancer:
    """Picks an upstream and counts the request as in flight on it.

    Within a tier the configured strategy (strategies.py: least_load or round_robin, behind
    affinity) chooses among the eligible, usable upstreams.
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
        self._strategy = build_strategy(config.strategy, config.affinity_max_entries)

    @property
    def affinity(self) -> AffinityIndex:
        return self._strategy.index

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
                chosen = self._strategy.choose(candidates, req)
                chosen.acquire()
                return chosen
        return None

    def _eligible(self, u: Upstream, req: RouteRequest) -> bool:
        if u.name in req.exclude or not u.config.serves(req.model):
            return False
        return not (req.needs_continuation and u.config.continuation == "none")
