"""Renders the dashboards to the JSON files Grafana imports or provisions from a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localseek.ops.deploy.grafana.gateway import gateway_dashboard
from localseek.ops.deploy.grafana.panels import Dashboard
from localseek.ops.deploy.grafana.server import server_dashboard
from localseek.ops.deploy.prometheus.scrape import GATEWAY_JOB, SERVER_JOB


def dashboards() -> dict[str, tuple[Dashboard, str]]:
    """File name -> (dashboard, the Prometheus job its instance variable lists)."""
    return {
        "localseek-server.json": (server_dashboard(), SERVER_JOB),
        "localseek-gateway.json": (gateway_dashboard(), GATEWAY_JOB),
    }


def render_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model."""
    return {name: d.to_json(job) for name, (d, job) in dashboards().items()}


def write_dashboards(out_dir: str | Path) -> list[Path]:
    """Write every dashboard into `out_dir` (created if missing); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in render_dashboards().items():
        path = out / name
        path.write_text(json.dumps(model, indent=2) + "\n")
        written.append(path)
    return written
