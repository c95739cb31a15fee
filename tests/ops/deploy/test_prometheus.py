"""Prometheus config and alert rules: promtool checks them, synthetic series fire every alert,
and every metric a rule reads is exported by a live server or gateway."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from live_stack import exported_names

from localseek.cli import main
from localseek.ops.deploy.prometheus.scrape import (
    GATEWAY_JOB,
    RULES_FILE,
    SERVER_JOB,
    alert_rules_text,
    kubernetes_scrape_config,
    render_scrape_config,
)

HERE = Path(__file__).parent
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


def promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(alert_rules_text())["groups"] for r in g["rules"]]


@needs_promtool
def test_static_config_and_rules_pass_promtool(tmp_path):
    assert (
        main(
            [
                "deploy",
                "prometheus",
                "--out",
                str(tmp_path),
                "--server",
                "a:8080",
                "--server",
                "b:8080",
                "--gateway",
                "gw:8000",
            ]
        )
        == 0
    )
    out = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out and "11 rules found" in out
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {SERVER_JOB: ["a:8080", "b:8080"], GATEWAY_JOB: ["gw:8000"]}


@needs_promtool
def test_kubernetes_config_passes_promtool(tmp_path):
    config = kubernetes_scrape_config("llm", "localseek-server", "localseek-gateway")
    (tmp_path / "prometheus.yml").write_text(render_scrape_config(config))
    (tmp_path / RULES_FILE).write_text(alert_rules_text())
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)


@needs_promtool
def test_synthetic_series_fire_every_alert(tmp_path):
    (tmp_path / RULES_FILE).write_text(alert_rules_text())
    shutil.copy(HERE / "alerts_test.yml", tmp_path / "alerts_test.yml")
    promtool("check", "rules", RULES_FILE, cwd=tmp_path)
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    cases = yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {r["alert"] for r in rules()}


def test_the_issue_alerts_exist():
    names = " ".join(r["alert"] for r in rules())
    for part in (
        "QueueGrowing",
        "429Rate",
        "ReplicaDown",
        "CircuitOpen",
        "ErrorRate",
        "CacheHitCollapse",
        "SensitiveRequestRefused",
    ):
        assert part in names, part


def test_rules_read_metrics_the_processes_export(live):
    exported = exported_names(live.server_url + "/metrics") | exported_names(
        live.gateway_url + "/metrics"
    )
    for rule in rules():
        names = set(re.findall(r"\b(localseek[:_][A-Za-z0-9_:]*)", rule["expr"]))
        assert names or "up{" in rule["expr"], rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)
