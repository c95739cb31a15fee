"""Forwarding over real loopback HTTP: answers, streams, retries before the first byte."""

from __future__ import annotations

import json

import httpx

from .conftest import chat
from .fakes import full_answer


def stream_text(url: str, body: dict, headers: dict | None = None) -> tuple[str, list[dict]]:
    """The streamed content and every event (errors included) of one streamed request."""
    text, events = "", []
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json={**body, "stream": True},
        headers=headers or {},
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            events.append(event)
            for choice in event.get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text, events


def test_chat_is_forwarded_and_answered(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream()]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == full_answer(8)
    assert a.completions()[0]["body"]["messages"][0]["content"] == "hello"


def test_completions_route_and_models(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream(models=["m", "other"])]})
    r = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "x"}, timeout=10)
    assert r.json()["choices"][0]["text"] == full_answer(8)
    ids = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
    assert ids == ["m", "other"]


def test_stream_is_relayed_with_one_role_and_done(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream()]})
    text, events = stream_text(url, chat())
    assert text == full_answer(8)
    assert sum("role" in e["choices"][0]["delta"] for e in events if e.get("choices")) == 1
    assert not any("usage" in e for e in events)  # injected for accounting, not asked for
    assert a.completions()[0]["body"]["stream_options"] == {
        "include_usage": True,
        "continuous_usage_stats": True,  # local upstreams report the usage in every chunk
    }


def test_failure_before_first_byte_is_retried_elsewhere(fake, gateway):
    bad = fake("bad", fail_status=503)
    good = fake("good")
    url = gateway({"upstreams": [bad.upstream(), good.upstream()]})
    for _ in range(6):
        r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
        assert r.status_code == 200
    assert len(good.completions()) == 6
    text, _ = stream_text(url, chat())
    assert text == full_answer(8)


def test_upstream_429_opens_its_circuit_for_its_retry_after(fake, gateway):
    busy = fake("busy", fail_status=429, retry_after=30)
    good = fake("good")
    url = gateway({"upstreams": [busy.upstream(), good.upstream()]})
    for _ in range(8):
        assert httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10).status_code == 200
    assert len(busy.completions()) == 1  # cooled down for 30 s after its first 429
    upstreams = {u["name"]: u for u in httpx.get(url + "/health").json()["upstreams"]}
    assert upstreams["busy"]["circuit"] == "open"


def test_every_upstream_rate_limiting_gives_429_with_retry_after(fake, gateway):
    a = fake("a", fail_status=429, retry_after=7)
    url = gateway({"upstreams": [a.upstream()]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_all_upstreams_failing_is_an_openai_shaped_502(fake, gateway):
    a = fake("a", fail_status=500)
    url = gateway({"upstreams": [a.upstream()]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "upstream_error"
    assert "a: HTTP 500" in r.json()["error"]["message"]


def test_upstream_4xx_is_passed_through_not_retried(fake, gateway):
    a = fake("a", fail_status=400)
    b = fake("b", fail_status=400)
    url = gateway({"upstreams": [a.upstream(), b.upstream()]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert r.status_code == 400
    assert len(a.completions()) + len(b.completions()) == 1


def test_model_map_renames_for_the_upstream_and_back(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream(model_map={"public": "internal"})]})
    r = httpx.post(url + "/v1/chat/completions", json={**chat(), "model": "public"}, timeout=10)
    assert a.completions()[0]["body"]["model"] == "internal"
    assert r.json()["model"] == "public"


def test_upstream_api_key_comes_from_env_and_client_key_is_not_forwarded(
    fake, gateway, monkeypatch
):
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", "sk-upstream")
    a = fake("a")
    url = gateway({"upstreams": [a.upstream(api_key_env="GW_TEST_UPSTREAM_KEY")]})
    httpx.post(
        url + "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer client"}
    )
    assert a.completions()[0]["auth"] == "Bearer sk-upstream"


def test_clients_that_leave_early_leak_no_upstream_slot(fake, gateway):
    import time

    slow = fake("slow", latency_s=0.4, token_delay_s=0.05)
    url = gateway({"upstreams": [slow.upstream(max_concurrency=2)]})
    for stream in (True, False, True):
        try:
            httpx.post(url + "/v1/chat/completions", json=chat(stream=stream), timeout=0.15)
        except httpx.TimeoutException:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        upstream = httpx.get(url + "/health").json()["upstreams"][0]
        if upstream["in_flight"] == 0:
            break
        time.sleep(0.1)
    assert upstream["in_flight"] == 0
    # and the upstream still takes requests at full capacity
    assert httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10).status_code == 200
