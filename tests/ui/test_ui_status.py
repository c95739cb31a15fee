"""/ui over HTTP: the page and its files, the status JSON of server and gateway, recent errors."""

from __future__ import annotations

import httpx
import pytest
from live_stack import SERVED


@pytest.mark.parametrize("which", ["server_url", "gateway_url"])
def test_page_and_static_files_are_served(live, which):
    base = getattr(live, which)
    page = httpx.get(base + "/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/ui/static/ui.js">' in page.text
    js = httpx.get(base + "/ui/static/ui.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "reasoning_content" in js.text
    assert httpx.get(base + "/ui/static/..%2Fapp.py").status_code == 404
    assert httpx.get(base + "/ui/static/missing.js").status_code == 404


def status_after_a_request(base: str) -> dict:
    body = {"model": SERVED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    httpx.post(base + "/v1/chat/completions", json=body, timeout=30).raise_for_status()
    return httpx.get(base + "/ui/status").json()


def test_server_status_reports_model_load_and_totals(live):
    status = status_after_a_request(live.server_url)
    assert status["kind"] == "server" and status["healthy"] is True
    assert status["models"][0] == SERVED
    assert status["load"]["capacity"] == 4 and 0 <= status["load"]["kv_usage"] <= 1
    assert status["totals"]["generated_tokens"] >= 1


def test_gateway_status_lists_replicas_and_counts_tokens(live):
    status = status_after_a_request(live.gateway_url)
    assert status["kind"] == "gateway" and status["healthy"] is True
    replicas = {r["name"]: r for r in status["replicas"]}
    assert replicas["replica-1"]["state"] == "ok" and replicas["replica-1"]["kind"] == "local"
    assert replicas["cloud"]["kind"] == "cloud"
    assert status["totals"]["generated_tokens"] >= 1


@pytest.mark.parametrize("which", ["server_url", "gateway_url"])
def test_recent_errors_show_the_error_message(live, which):
    base = getattr(live, which)
    bad = httpx.post(
        base + "/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
    )
    assert bad.status_code == 404
    errors = httpx.get(base + "/ui/status").json()["errors"]
    assert errors[0]["status"] == 404 and errors[0]["path"] == "/v1/chat/completions"
    assert "no-such-model" in errors[0]["message"]


def test_status_asks_for_the_api_key_where_the_routes_do(live):
    from live_stack import serving

    from localseek.gateway.app import create_app
    from localseek.gateway.config import parse_gateway_config
    from localseek.server.app import build_app
    from localseek.server.config import ServerConfig

    gateway = create_app(
        parse_gateway_config(
            {
                "upstreams": [{"name": "replica-1", "url": live.server_url + "/v1"}],
                "tenants": [{"name": "team", "api_keys": ["gw-key"]}],
            }
        )
    )
    server = build_app(None, ServerConfig(api_key="srv-key"))  # still loading: status works
    for app, key in ((gateway, "gw-key"), (server, "srv-key")):
        with serving(app) as url:
            assert httpx.get(url + "/ui").status_code == 200  # the page itself is static
            refused = httpx.get(url + "/ui/status")
            assert refused.status_code == 401 and refused.json()["error"]["message"]
            wrong = httpx.get(url + "/ui/status", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            ok = httpx.get(url + "/ui/status", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200 and ok.json()["kind"] in ("gateway", "server")
