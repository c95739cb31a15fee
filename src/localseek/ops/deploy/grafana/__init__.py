"""Grafana dashboards as code: `localseek deploy grafana` writes them as JSON files."""
