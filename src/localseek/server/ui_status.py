"""What the /ui page shows about a `localseek serve` process (model, load, totals)."""

from __future__ import annotations

from typing import Any

from localseek.server.state import ServerState


def server_ui_status(state: ServerState) -> dict[str, Any]:
    """The server's status for /ui/status; while the model loads, only that it is not ready."""
    ready = state.ready()
    status: dict[str, Any] = {
        "models": state.model_ids(),
        "healthy": ready,
        "replicas": [{"name": "this server", "kind": "local", "state": "ok" if ready else "down"}],
    }
    if not ready:
        return status
    load = state.load_report()
    stats = state.engine.stats()
    status["load"] = {
        "running": load.running,
        "waiting": load.waiting,
        "capacity": load.capacity,
        "kv_usage": load.kv_usage,
        "estimated_wait_s": load.estimated_wait_s,
    }
    status["replicas"][0].update(in_flight=load.queued, capacity=load.capacity)
    status["totals"] = {
        "generated_tokens": stats.generation_tokens_total,
        "prompt_tokens": stats.prompt_tokens_total,
        "prefix_cache_hit_tokens": stats.prefix_cache_hits,
    }
    return status
