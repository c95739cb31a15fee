"""The gateway config a deployment runs, derived from the DeploySpec and its engine addresses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localseek.gateway.config import parse_gateway_config
from localseek.ops.deploy.spec import REDIS_PORT, DeploySpec, Engine, engines

# An engine's upstreams: (upstream name, base URL including /v1) for each address it has.
Addresses = Callable[[Engine], list[tuple[str, str]]]


def render_gateway_config(spec: DeploySpec, addresses: Addresses, redis_host: str) -> dict:
    """The gateway.yaml mapping; validated by the gateway's own parser before it is returned."""
    upstreams: list[dict[str, Any]] = []
    for engine in engines(spec):
        for name, url in addresses(engine):
            upstreams.append({"name": name, "url": url, "models": [engine.served_id]})
    config: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": spec.gateway_port,
        "redis_url": f"redis://{redis_host}:{REDIS_PORT}/0",
        "cache": {"backend": "redis"},
        "limits": {"backend": "redis"},
        "admission": {"request_timeout_s": float(spec.max_request_s)},
        "upstreams": upstreams,
        "models": [
            {
                "name": m.name,
                "sticky": m.sticky,
                "versions": [
                    {"name": v.name, "model": f"{m.name}-{v.name}", "weight": v.weight}
                    for v in m.versions
                ],
            }
            for m in spec.models
        ],
    }
    if spec.admin_key_env:
        config["admin"] = {"api_key_envs": [spec.admin_key_env]}
    parse_gateway_config(config)  # a spec that renders a config the gateway refuses fails here
    return config
