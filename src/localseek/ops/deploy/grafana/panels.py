"""A small builder for Grafana dashboard JSON: one call per panel, laid out on a 24-wide grid.

Written here rather than taken from grafanalib or grafana-foundation-sdk: the dashboards need
three panel kinds and a datasource variable, and a new panel is one line naming its PromQL, so
a library (and its schema churn) would add more than it saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH = {"timeseries": 12, "stat": 6, "state-timeline": 12}
_HEIGHT = {"timeseries": 8, "stat": 4, "state-timeline": 8}


@dataclass(frozen=True)
class Query:
    """One PromQL target; `legend` is Grafana's legend format (`{{upstream}}`)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: a title, its kind, a unit (Grafana's unit ids: s, percentunit, currencyUSD...)."""

    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    mappings: tuple[dict[str, Any], ...] = ()


def panel(title: str, *queries: Query | str, kind: str = "timeseries", **opts: Any) -> Panel:
    """`panel("TTFT", Query(expr, "p99"), unit="s")`; a bare string is a query without legend."""
    qs = tuple(q if isinstance(q, Query) else Query(q) for q in queries)
    return Panel(title, qs, kind, **opts)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = ("localseek",)
    variables: tuple[str, ...] = field(default=("instance",))  # label_values of `up` by job

    def queries(self) -> list[str]:
        """Every PromQL expression in the dashboard, in panel order."""
        return [q.expr for row in self.rows for p in row.panels for q in p.queries]

    def to_json(self, job: str) -> dict[str, Any]:
        """The dashboard model Grafana imports (schemaVersion 39, Grafana 10/11)."""
        panels: list[dict[str, Any]] = []
        y = 0
        next_id = 1
        for row in self.rows:
            panels.append(_row_json(row.title, next_id, y))
            next_id += 1
            y += 1
            x = 0
            row_height = 0
            for p in row.panels:
                w, h = _WIDTH[p.kind], _HEIGHT[p.kind]
                if x + w > 24:
                    x, y, row_height = 0, y + row_height, 0
                panels.append(_panel_json(p, next_id, x, y))
                next_id += 1
                x += w
                row_height = max(row_height, h)
            y += row_height
        return {
            "uid": self.uid,
            "title": self.title,
            "tags": list(self.tags),
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": _variables(self.variables, job)},
            "panels": panels,
        }


def _row_json(title: str, panel_id: int, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "id": panel_id,
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def _panel_json(p: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "refId": chr(ord("A") + i),
        }
        for i, q in enumerate(p.queries)
    ]
    return {
        "type": p.kind,
        "id": panel_id,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": _HEIGHT[p.kind], "w": _WIDTH[p.kind], "x": x, "y": y},
        "fieldConfig": {
            "defaults": {"unit": p.unit, "mappings": list(p.mappings)},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def _variables(names: tuple[str, ...], job: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    for name in names:
        out.append(
            {
                "name": name,
                "type": "query",
                "datasource": DATASOURCE,
                "query": f'label_values(up{{job="{job}"}}, {name})',
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    return out
