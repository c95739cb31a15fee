"""The usage ledger and `localseek usage`: real requests through a gateway over a tiny-model
server land per tenant and model (local, cache, refused, money saved); sensitive requests
refused for lack of a local replica are counted for their alert."""

from __future__ import annotations

import csv
import io
import json

import httpx
import openai
import pytest
from live_stack import CLOUD_PRICES, SERVED, free_port, serving

from localseek.cli import main
from localseek.errors import ConfigError
from localseek.gateway.app import create_app
from localseek.gateway.config import parse_gateway_config
from localseek.gateway.usage_ledger import SqliteLedger, UsageEvent
from localseek.gateway.usage_report import parse_time

from .test_metrics import samples


def cloud(**extra):
    url = f"http://127.0.0.1:{free_port()}/v1"  # never reached in these tests
    return {"name": "cloud", "url": url, "kind": "cloud", "models": [SERVED], **extra}


def usage_json(capsys, *args: str) -> list[dict]:
    assert main(["usage", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ledger_totals_by_tenant_model_and_time_range(tmp_path):
    now = [1000.0]
    ledger = SqliteLedger(tmp_path / "u.db", clock=lambda: now[0])
    ledger.record(UsageEvent("a", "m", "local", 10, 5, 0.0, 0.2))
    ledger.record(UsageEvent("a", "m", "cloud", 3, 2, 0.5, 0.0))
    now[0] = 2000.0
    ledger.record(UsageEvent("a", "m", "cache", 10, 5, 0.0, 0.2))
    ledger.record(UsageEvent("a", "m", "refused"))
    ledger.record(UsageEvent("b", "m", "local", 1, 1, 0.0, 0.1))
    rows = {r.tenant: r for r in ledger.summary()}
    a = rows["a"]
    assert (a.requests, a.local_tokens, a.cloud_tokens, a.cache_hits, a.refused) == (3, 15, 5, 1, 1)
    assert a.cost_usd == pytest.approx(0.5) and a.saved_usd == pytest.approx(0.4)
    early = ledger.summary(until=1500.0)
    assert [(r.tenant, r.requests) for r in early] == [("a", 2)]
    assert [r.tenant for r in ledger.summary(since=1500.0)] == ["a", "b"]


def test_time_arguments():
    assert parse_time("24h", now=100_000.0) == 100_000.0 - 86_400
    assert parse_time("2026-01-01") == parse_time("2026-01-01T00:00:00+00:00")
    with pytest.raises(ConfigError, match="not understood"):
        parse_time("yesterday")


def test_usage_from_a_live_gateway(live, tmp_path, capsys):
    ledger = tmp_path / "usage.db"
    config = {
        "upstreams": [{"name": "replica-1", "url": live.server_url + "/v1"}, cloud(**CLOUD_PRICES)],
        "tenants": [
            {"name": "team-a", "api_keys": ["key-a"], "requests_per_minute": 2},
            {"name": "team-b", "api_keys": ["key-b"]},
        ],
        "usage": {"path": str(ledger)},
    }
    with serving(create_app(parse_gateway_config(config))) as gateway:
        a = openai.OpenAI(base_url=gateway + "/v1", api_key="key-a", max_retries=0)
        b = openai.OpenAI(base_url=gateway + "/v1", api_key="key-b", max_retries=0)
        ask = {"model": SERVED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        first = a.chat.completions.create(temperature=0, **ask).usage
        a.chat.completions.create(temperature=0, **ask)  # the same again: a cache hit
        with pytest.raises(openai.RateLimitError):
            a.chat.completions.create(temperature=0, **ask)  # over 2 requests per minute
        chunks = list(
            b.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, temperature=0.5, **ask
            )
        )
        streamed = chunks[-1].usage
        metrics = samples(gateway)

    rows = {r["tenant"]: r for r in usage_json(capsys, "--ledger", str(ledger))}
    price = CLOUD_PRICES["price_input_per_mtok"], CLOUD_PRICES["price_output_per_mtok"]

    def usd(u) -> float:
        return (u.prompt_tokens * price[0] + u.completion_tokens * price[1]) / 1e6

    team_a = rows["team-a"]
    assert team_a["model"] == SERVED
    assert (team_a["requests"], team_a["cache_hits"], team_a["refused"]) == (2, 1, 1)
    assert team_a["local_tokens"] == first.total_tokens == team_a["cache_tokens"]
    assert team_a["cloud_tokens"] == 0 and team_a["cost_usd"] == 0
    assert team_a["saved_usd"] == pytest.approx(2 * usd(first))  # served once, then cached
    shed = ("localseek_gateway_shed_total", (("reason", "rate_limit"), ("tenant", "team-a")))
    assert metrics[shed] == 1  # the tenant's limit hit, for the dashboard's per-tenant panel
    saved_metric = metrics[("localseek_gateway_saved_usd_total", (("tenant", "team-a"),))]
    assert saved_metric == pytest.approx(usd(first))  # the metric counts local answers only
    team_b = rows["team-b"]
    assert team_b["local_tokens"] == streamed.total_tokens and team_b["requests"] == 1

    assert main(["usage", "--ledger", str(ledger), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["tenant"] for r in parsed] == ["team-a", "team-b"]
    assert main(["usage", "--ledger", str(ledger)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[-1].startswith("TOTAL") and "saved_usd" in table
    assert usage_json(capsys, "--ledger", str(ledger), "--since", "2999-01-01") == []


def test_sensitive_request_without_a_local_replica_is_counted(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = {
        "upstreams": [{"name": "replica-1", "url": dead, "models": [SERVED]}, cloud()],
        "health": {"interval_s": 0.2, "probe_timeout_s": 0.5},
        "usage": {"path": str(tmp_path / "usage.db")},
    }
    gw_config = tmp_path / "gateway.yaml"
    gw_config.write_text(json.dumps(config))  # JSON is YAML
    with serving(create_app(parse_gateway_config(config))) as gateway:
        body = {
            "model": SERVED,
            "messages": [{"role": "user", "content": "my email is ann@example.com"}],
        }
        r = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code >= 500 and r.json()["error"]["message"]
        metrics = samples(gateway)
    refused = ("localseek_gateway_local_only_refused_total", (("reason", "unavailable"),))
    assert metrics[refused] == 1
    rows = usage_json(capsys, "--config", str(gw_config))
    assert [(r["tenant"], r["refused"], r["requests"]) for r in rows] == [("anonymous", 1, 0)]


def test_missing_ledger_is_a_clear_error(tmp_path, capsys):
    assert main(["usage", "--ledger", str(tmp_path / "nope.db")]) == 1
    assert "no usage ledger" in capsys.readouterr().err


def test_a_failing_ledger_never_fails_the_request(tmp_path, caplog):
    ledger = SqliteLedger(tmp_path / "u.db")
    ledger.close()  # every write now fails, like a vanished disk
    ledger.record(UsageEvent("a", "m", "local", 1, 1))
    assert "could not record a local request" in caplog.text
