"""The Prometheus scrape config for servers and gateways: static targets (compose) or Kubernetes.

The job names are what the Grafana dashboards' instance variable and the alert rules select on,
so every renderer (compose, k8s) should take its config from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import yaml

SERVER_JOB = "localseek-server"
GATEWAY_JOB = "localseek-gateway"
RULES_FILE = "localseek-alerts.yml"


def alert_rules_text() -> str:
    """The alert rules file shipped with the package (`alerts.yml`)."""
    return resources.files(__package__).joinpath("alerts.yml").read_text()


def static_scrape_config(
    servers: Sequence[str], gateways: Sequence[str], *, interval_s: int = 15
) -> dict[str, Any]:
    """prometheus.yml for fixed `host:port` targets (docker compose, bare metal)."""
    jobs = [
        _job(SERVER_JOB, [{"targets": list(servers)}], "static_configs"),
        _job(GATEWAY_JOB, [{"targets": list(gateways)}], "static_configs"),
    ]
    return _config(jobs, interval_s)


def kubernetes_scrape_config(
    namespace: str,
    server_service: str,
    gateway_service: str,
    *,
    server_port: int = 8080,
    gateway_port: int = 8000,
    interval_s: int = 15,
) -> dict[str, Any]:
    """prometheus.yml finding every pod through DNS A records of two headless Services.

    DNS discovery rather than kubernetes_sd_configs: it needs no RBAC for Prometheus, and
    Debian's prometheus build (the one CI checks with) leaves Kubernetes discovery out.
    The Services must be headless (`clusterIP: None`) so each record is one pod.
    """
    jobs = []
    for job, service, port in (
        (SERVER_JOB, server_service, server_port),
        (GATEWAY_JOB, gateway_service, gateway_port),
    ):
        name = f"{service}.{namespace}.svc.cluster.local"
        sd = [{"names": [name], "type": "A", "port": port, "refresh_interval": "30s"}]
        jobs.append(_job(job, sd, "dns_sd_configs"))
    return _config(jobs, interval_s)


def render_scrape_config(config: dict[str, Any]) -> str:
    return (
        "# Rendered by localseek; the alert rules are in "
        + RULES_FILE
        + "\n"
        + yaml.safe_dump(config, sort_keys=False)
    )


def _job(name: str, targets: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return {"job_name": name, "metrics_path": "/metrics", key: targets}


def _config(jobs: list[dict[str, Any]], interval_s: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s"},
        "rule_files": [RULES_FILE],
        "scrape_configs": jobs,
    }
