"""Writes prometheus.yml (static targets) and the alert rules next to it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from localseek.ops.deploy.prometheus.scrape import (
    RULES_FILE,
    alert_rules_text,
    render_scrape_config,
    static_scrape_config,
)


def write_prometheus(
    out_dir: str | Path, servers: Sequence[str], gateways: Sequence[str]
) -> list[Path]:
    """prometheus.yml scraping `servers` and `gateways` (host:port), and the rules it loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "prometheus.yml"
    config.write_text(render_scrape_config(static_scrape_config(servers, gateways)))
    rules = out / RULES_FILE
    rules.write_text(alert_rules_text())
    return [config, rules]
