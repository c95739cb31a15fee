"""Dashboards as code: every metric a panel queries is exported by a live server or gateway."""

from __future__ import annotations

import json
import re

import pytest
from live_stack import exported_names

from localseek.cli import main
from localseek.ops.deploy.grafana.render import dashboards, render_dashboards

METRIC = re.compile(r"\b(localseek[:_][A-Za-z0-9_:]*)")


def names_in(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


@pytest.fixture(scope="module")
def exported(live) -> dict[str, set[str]]:
    return {
        "localseek-server.json": exported_names(live.server_url + "/metrics"),
        "localseek-gateway.json": exported_names(live.gateway_url + "/metrics"),
    }


@pytest.mark.parametrize("filename", sorted(dashboards()))
def test_every_panel_queries_metrics_the_process_exports(filename, exported):
    dashboard, _ = dashboards()[filename]
    missing = {}
    for expr in dashboard.queries():
        names = names_in(expr)
        assert names, f"query names no localseek metric: {expr}"
        unknown = names - exported[filename]
        if unknown:
            missing[expr] = sorted(unknown)
    assert not missing, f"{filename}: metrics not exported: {missing}"


def test_the_check_catches_a_misspelled_metric(exported):
    assert (
        names_in("rate(localseek:generation_token_total[5m])") - exported["localseek-server.json"]
    )


def test_dashboards_cover_the_issue_panels():
    titles = {
        name: [p["title"] for p in model["panels"] if p["type"] != "row"]
        for name, model in render_dashboards().items()
    }
    server = " ".join(titles["localseek-server.json"]).lower()
    for words in (
        "tokens per second",
        "first token",
        "inter-token",
        "running and waiting",
        "kv cache",
        "prefix cache",
        "429",
        "preemptions",
    ):
        assert words in server, words
    gateway = " ".join(titles["localseek-gateway.json"]).lower()
    for words in (
        "in flight per upstream",
        "circuit",
        "failovers",
        "overflow to cloud",
        "cache hit rate",
        "limits hit per tenant",
        "saved",
    ):
        assert words in gateway, words


def test_layout_is_valid_grafana_json():
    for model in render_dashboards().values():
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids))
        for p in model["panels"]:
            pos = p["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
            if p["type"] != "row":
                assert p["targets"] and all(t["expr"] for t in p["targets"])
        assert {v["name"] for v in model["templating"]["list"]} == {"datasource", "instance"}


def test_deploy_grafana_writes_the_files(tmp_path, capsys):
    assert main(["deploy", "grafana", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(dashboards())
    for path in tmp_path.iterdir():
        assert json.loads(path.read_text())["uid"].startswith("localseek-")
