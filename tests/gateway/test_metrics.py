"""GET /metrics: per-upstream counts and circuit state, tokens and money per tenant."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import chat
from .servers import free_port


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_upstreams_tokens_cost_and_savings(fake, gateway):
    local = fake("local")
    cloud = fake("cloud")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    url = gateway(
        {
            "upstreams": [
                local.upstream(),
                {"name": "dead", "url": dead, "backup": True},
                cloud.upstream(kind="cloud", price_input_per_mtok=1e6, price_output_per_mtok=2e6),
            ],
            "tenants": [{"name": "app", "api_keys": ["sk"]}],
        }
    )
    headers = {"Authorization": "Bearer sk"}
    r = httpx.post(url + "/v1/chat/completions", json=chat(), headers=headers)
    usage = r.json()["usage"]
    local.state.fail_status = 503  # now every local tier fails: the cloud takes it (failover)
    assert httpx.post(url + "/v1/chat/completions", json=chat(), headers=headers).status_code == 200

    m = samples(url)
    price = usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2  # USD at the cloud's price
    assert m[("localseek_gateway_saved_usd_total", (("tenant", "app"),))] == price
    assert m[("localseek_gateway_cloud_cost_usd_total", (("tenant", "app"),))] == price
    tokens = (
        "localseek_gateway_tokens_total",
        (("direction", "output"), ("kind", "local"), ("tenant", "app")),
    )
    assert m[tokens] == usage["completion_tokens"]
    assert (
        m[("localseek_gateway_upstream_requests_total", (("outcome", "ok"), ("upstream", "local")))]
        == 1
    )
    assert (
        m[
            (
                "localseek_gateway_upstream_errors_total",
                (("kind", "status_5xx"), ("upstream", "local")),
            )
        ]
        == 1
    )
    assert m[("localseek_gateway_upstream_circuit_state", (("upstream", "dead"),))] == 2  # open
    assert m[("localseek_gateway_overflowed_total", (("tenant", "app"),))] == 1
    assert m[("localseek_gateway_requests_total", (("route", "chat"), ("status", "200")))] == 2
    assert ("localseek_gateway_affinity_entries", ()) in m
    assert ("localseek_gateway_queue_depth", ()) in m
