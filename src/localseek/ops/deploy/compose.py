"""`localseek deploy compose`: engines + gateway + Redis + Prometheus as one compose project."""

from __future__ import annotations

from typing import Any

import yaml

from localseek.ops.deploy.gateway_config import render_gateway_config
from localseek.ops.deploy.prometheus.deploy_spec import compose_scrape_config
from localseek.ops.deploy.spec import ENGINE_PORT, PROMETHEUS_PORT, DeploySpec, Engine, engines

GATEWAY = "gateway"
REDIS = "redis"
PROMETHEUS = "prometheus"
HEADER = "# Rendered by `localseek deploy compose` from {spec}; edit the spec, not this file.\n"


def _replicas(engine: Engine) -> list[str]:
    return [f"{engine.name}-{i}" for i in range(engine.version.replicas)]


def render_compose(spec: DeploySpec, spec_name: str = "the deploy spec") -> dict[str, str]:
    """{file name: content}: compose.yaml, gateway.yaml and prometheus.yml for one directory."""
    gateway_config = render_gateway_config(
        spec,
        lambda e: [(name, f"http://{name}:{ENGINE_PORT}/v1") for name in _replicas(e)],
        REDIS,
    )
    services: dict[str, Any] = {}
    for engine in engines(spec):
        for name in _replicas(engine):
            services[name] = _engine_service(spec, engine)
    services[GATEWAY] = _gateway_service(spec, list(services))
    services[REDIS] = {
        "image": spec.redis_image,
        # Cache entries and rate-limit buckets are worth nothing after a restart.
        "command": ["redis-server", "--save", "", "--appendonly", "no"],
        "restart": "unless-stopped",
    }
    services[PROMETHEUS] = {
        "image": spec.prometheus_image,
        "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
        "ports": [f"{PROMETHEUS_PORT}:{PROMETHEUS_PORT}"],
        "depends_on": [GATEWAY],
        "restart": "unless-stopped",
    }
    compose = {"services": services, "volumes": {"model-cache": {}}}
    header = HEADER.format(spec=spec_name)
    return {
        "compose.yaml": header + _dump(compose),
        "gateway.yaml": header + _dump(gateway_config),
        "prometheus.yml": header + _dump(compose_scrape_config(spec, GATEWAY)),
    }


def _engine_service(spec: DeploySpec, engine: Engine) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": engine.image(spec),
        "command": engine.serve_args(spec),
        "volumes": [f"{spec.model_store}:/models:ro", "model-cache:/cache"],
        "expose": [str(ENGINE_PORT)],
        # SIGTERM drains (503 to new requests, admitted ones finish); then compose kills.
        "stop_grace_period": f"{spec.max_request_s + 30}s",
        "restart": "unless-stopped",
        "labels": {
            "localseek.io/model": engine.model.name,
            "localseek.io/version": engine.version.name,
        },
    }
    if engine.version.gpus:
        device = {"driver": "nvidia", "count": engine.version.gpus, "capabilities": ["gpu"]}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return service


def _gateway_service(spec: DeploySpec, engine_services: list[str]) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": spec.gateway_image,
        "command": ["--config", "/etc/localseek/gateway.yaml", "--host", "0.0.0.0"]
        + ["--port", str(spec.gateway_port)],
        "volumes": ["./gateway.yaml:/etc/localseek/gateway.yaml:ro"],
        "ports": [f"{spec.gateway_port}:{spec.gateway_port}"],
        "depends_on": [REDIS, *engine_services],
        "stop_grace_period": f"{spec.max_request_s + 30}s",
        "restart": "unless-stopped",
    }
    if spec.admin_key_env:
        env = spec.admin_key_env
        service["environment"] = {env: f"${{{env}:?set {env} for the gateway admin API}}"}
    return service


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
