"""What the /ui page shows about a gateway: its upstreams' health and load, queue, totals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from localseek.gateway.slot_queue import SlotQueue
from localseek.gateway.upstream import Upstream


def _sum(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def gateway_ui_status(
    upstreams: Sequence[Upstream], queue: SlotQueue, registry: CollectorRegistry
) -> dict[str, Any]:
    models: list[str] = []
    for u in upstreams:
        for m in (*u.config.models, *u.config.model_map):
            if m not in models:
                models.append(m)
    replicas = [
        {
            "name": u.name,
            "kind": u.config.kind + (" (backup)" if u.config.backup else ""),
            "state": "ok" if u.circuit.state == "closed" else f"circuit {u.circuit.state}",
            "in_flight": u.in_flight,
            "load": u.load(),
            "capacity": u.capacity,
        }
        for u in upstreams
    ]
    local = [u for u in upstreams if u.config.kind == "local"]
    p = "localseek_gateway_"
    return {
        "models": models,
        "healthy": any(u.circuit.state != "open" for u in local),
        "load": {
            "running": sum(u.in_flight for u in upstreams),
            "waiting": queue.depth,
            "capacity": sum(u.capacity for u in local),
        },
        "replicas": replicas,
        "totals": {
            "generated_tokens": _sum(registry, p + "tokens_total", direction="output"),
            "prompt_tokens": _sum(registry, p + "tokens_total", direction="input"),
            "cache_hits": _sum(registry, p + "cache_hits_total"),
            "saved_usd": _sum(registry, p + "saved_usd_total"),
            "cloud_cost_usd": _sum(registry, p + "cloud_cost_usd_total"),
        },
    }
