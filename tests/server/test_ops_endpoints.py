"""/health (503 until the engine is attached), /load for gateways, /metrics in Prometheus text."""

from __future__ import annotations

import httpx
import pytest
from conftest import SERVED, serve
from live_server import LiveServer
from prometheus_client.parser import text_string_to_metric_families

from localseek.server.app import build_app
from localseek.server.config import ServerConfig

pytestmark = pytest.mark.timeout(120)


def test_health_is_503_until_the_engine_is_attached(engine):
    app = build_app(None, ServerConfig(served_model_name=SERVED))
    with LiveServer(app) as live:
        resp = httpx.get(live.url + "/health")
        assert resp.status_code == 503 and resp.json()["error"]["type"] == "service_unavailable"
        chat = httpx.post(
            live.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 503 and "loading" in chat.json()["error"]["message"]
        app.state.server.attach(engine)
        assert httpx.get(live.url + "/health").status_code == 200


def test_load_snapshot(server):
    report = httpx.get(server.url + "/load").json()
    assert report["model"] == SERVED
    assert report["capacity"] == 8 and report["queued"] == report["running"] + report["waiting"]
    for key in ("kv_usage", "estimated_wait_s", "generation_tokens_per_s", "queued_tokens"):
        assert report[key] >= 0


def test_the_gateway_reads_the_load_the_server_sends(server):
    from localseek.gateway.health import parse_load

    report = httpx.get(server.url + "/load").json()
    assert parse_load(report) == (report["queued"], 8)
    # The old, private shapes are not a report: one schema (localseek/api/load.py).
    assert parse_load({"running": 1, "waiting": 0, "max_num_seqs": 8}) is None


def _samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def test_metrics_after_a_request(engine):
    with serve(engine) as live:
        httpx.post(
            live.url + "/v1/completions",
            json={"prompt": "Hello", "max_tokens": 5, "temperature": 0},
            timeout=60,
        )
        httpx.post(live.url + "/v1/completions", json={"prompt": []}, timeout=60)  # a 400
        resp = httpx.get(live.url + "/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        samples = _samples(resp.text)
    for name in (
        "localseek:num_requests_running",
        "localseek:num_requests_waiting",
        "localseek:kv_cache_usage_perc",
        "localseek:prefix_cache_queries_total",
        "localseek:prefix_cache_hits_total",
        "localseek:prompt_tokens_total",
        "localseek:generation_tokens_total",
        "localseek:estimated_wait_seconds",
    ):
        assert name in samples, name
    assert samples["localseek:time_to_first_token_seconds_count"] == 1
    assert samples["localseek:e2e_request_latency_seconds_count"] == 1
    assert samples["localseek:time_per_output_token_seconds_count"] == 1
    assert samples["localseek:request_queue_time_seconds_count"] == 1
    assert samples["localseek:request_success_total{finished_reason=length}"] == 1
    assert samples["localseek:request_errors_total{status=400}"] == 1


def test_openapi_schema_documents_the_request_models(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/load"} <= set(
        schema["paths"]
    )
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]
    assert "messages" in chat["required"] and "top_logprobs" in chat["properties"]


def test_two_apps_in_one_process_have_separate_registries(engine):
    first = build_app(engine, ServerConfig())
    second = build_app(engine, ServerConfig())
    assert first.state.server.registry is not second.state.server.registry
