"""RouteRequest: what the balancer and its strategies need to know about a request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RouteRequest:
    """What the balancer needs to know about a request."""

    model: str
    affinity_key: str | None = None
    exclude: frozenset[str] = frozenset()  # upstreams already tried by this request
    needs_continuation: bool = False  # only upstreams able to continue a partial answer
