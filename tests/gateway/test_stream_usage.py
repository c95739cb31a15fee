"""A stream continued mid-answer: its budget is cut by tokens sent, its usage is the answer's."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import chat
from .fakes import full_answer
from .test_failover import read_stream

MAX_TOKENS = 10
CHUNK = 3  # words (the fakes' tokens) per content chunk: a detokenizer that held some back


def _request(route: str, stream_options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    extra = {"stream": True, "max_tokens": MAX_TOKENS, "stream_options": stream_options}
    if route == "chat":
        return "/v1/chat/completions", chat(**extra)
    return "/v1/completions", {"model": "m", "prompt": "count: ", **extra}


def _prompt_tokens(recorded: dict[str, Any]) -> int:
    """The prompt tokens the fake reports for a recorded request (see fakes.py)."""
    body = recorded["body"]
    return len(json.dumps(body.get("messages", body.get("prompt")))) // 4


def _counter(url: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def _stream(url: str, route: str, stream_options: dict[str, Any]) -> tuple[str, list[dict]]:
    path, body = _request(route, stream_options)
    with httpx.stream("POST", url + path, json=body, timeout=20) as r:
        assert r.status_code == 200
        return read_stream(r, route)


@pytest.mark.parametrize("route", ["chat", "completions"])
def test_multi_token_chunks_never_push_the_answer_past_max_tokens(fake, gateway, route):
    dying = fake("dying", die_after_chunks=2, answer_tokens=30, tokens_per_chunk=CHUNK)
    spare = fake("spare", answer_tokens=30, tokens_per_chunk=CHUNK)
    url = gateway({"upstreams": [dying.upstream(), spare.upstream(backup=True)]})
    text, events = _stream(url, route, {"include_usage": True})

    # Two chunks of three tokens reached the client: the continuation may add four, not eight.
    assert text == full_answer(MAX_TOKENS)
    asked = [r["body"] for r in dying.completions() + spare.completions()]
    assert [b["stream_options"] for b in asked] == [
        {"include_usage": True, "continuous_usage_stats": True}
    ] * 2
    assert asked[1]["max_tokens"] == MAX_TOKENS - 2 * CHUNK
    assert not any("error" in e for e in events)

    # The client asked for usage once, at the end: the upstreams' usage-so-far is not relayed,
    # and the final usage covers the whole answer and the client's own prompt.
    assert [e for e in events if e.get("usage") is not None] == [events[-1]]
    prompt = _prompt_tokens(dying.completions()[0])
    assert prompt < _prompt_tokens(spare.completions()[0])  # the continuation's holds the partial
    assert events[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": MAX_TOKENS,
        "total_tokens": prompt + MAX_TOKENS,
    }
    # The accounting counted the same.
    tokens = "localseek_gateway_tokens_total"
    labels = {"tenant": "anonymous", "kind": "local"}
    assert _counter(url, tokens, direction="output", **labels) == MAX_TOKENS
    assert _counter(url, tokens, direction="input", **labels) == prompt


def test_a_client_asking_for_usage_in_every_chunk_sees_the_answers_so_far(fake, gateway):
    dying = fake("dying", die_after_chunks=2, answer_tokens=30, tokens_per_chunk=CHUNK)
    spare = fake("spare", answer_tokens=30, tokens_per_chunk=CHUNK)
    url = gateway({"upstreams": [dying.upstream(), spare.upstream(backup=True)]})
    options = {"include_usage": True, "continuous_usage_stats": True}
    text, events = _stream(url, "chat", options)
    assert text == full_answer(MAX_TOKENS)
    prompt = _prompt_tokens(dying.completions()[0])
    assert all(e["usage"]["prompt_tokens"] == prompt for e in events)
    so_far = [e["usage"]["completion_tokens"] for e in events]
    assert so_far == sorted(so_far) and so_far[-1] == MAX_TOKENS
    with_text = [e["usage"]["completion_tokens"] for e in events if e["choices"] and _text(e)]
    assert with_text == [3, 6, 9, 10]  # two chunks from the dying upstream, two from the spare


def _text(event: dict[str, Any]) -> str:
    return event["choices"][0].get("delta", {}).get("content") or ""


def test_upstreams_not_asked_for_usage_in_every_chunk_are_counted_by_chunks(fake, gateway):
    dying = fake("dying", die_after_chunks=2, answer_tokens=30, tokens_per_chunk=CHUNK)
    spare = fake("spare", answer_tokens=30, tokens_per_chunk=CHUNK)
    off = {"continuous_usage": False}
    url = gateway({"upstreams": [dying.upstream(**off), spare.upstream(backup=True, **off)]})
    text, events = _stream(url, "chat", {"include_usage": True})
    asked = [r["body"] for r in dying.completions() + spare.completions()]
    assert [b["stream_options"] for b in asked] == [{"include_usage": True}] * 2
    # Without the usage so far a chunk counts as one token: the documented undercount.
    assert asked[1]["max_tokens"] == MAX_TOKENS - 2
    assert text == full_answer(2 * CHUNK + MAX_TOKENS - 2)
    assert events[-1]["usage"]["completion_tokens"] == MAX_TOKENS


def test_cloud_upstreams_are_not_asked_for_usage_in_every_chunk(fake, gateway):
    local = fake("local")
    cloud = fake("cloud")
    url = gateway({"upstreams": [local.upstream(), cloud.upstream(kind="cloud")]})
    httpx.post(url + "/v1/chat/completions", json=chat(stream=True), timeout=20).raise_for_status()
    local.state.fail_status = 503
    # Not even a client's own request for it reaches an upstream that may reject the key.
    body = chat(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    httpx.post(url + "/v1/chat/completions", json=body, timeout=20).raise_for_status()
    options = [r["body"]["stream_options"] for r in local.completions() + cloud.completions()]
    assert options[0] == {"include_usage": True, "continuous_usage_stats": True}
    assert options[-1] == {"include_usage": True}
    assert cloud.completions(), "the request did not fail over to the cloud"


@pytest.mark.parametrize("route", ["chat", "completions"])
def test_a_stream_cut_after_its_last_token_is_finished_by_the_gateway(fake, gateway, route):
    # Two chunks of three tokens spend a budget of six; the upstream dies before its finish.
    dying = fake("dying", die_after_chunks=2, answer_tokens=30, tokens_per_chunk=CHUNK)
    spare = fake("spare", answer_tokens=30)
    url = gateway({"upstreams": [dying.upstream(), spare.upstream(backup=True)]})
    path, body = _request(route, {"include_usage": True})
    body["max_tokens"] = 2 * CHUNK
    with httpx.stream("POST", url + path, json=body, timeout=20) as r:
        text, events = read_stream(r, route)
    assert text == full_answer(2 * CHUNK)
    assert spare.completions() == []
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    prompt = _prompt_tokens(dying.completions()[0])
    assert events[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 2 * CHUNK,
        "total_tokens": prompt + 2 * CHUNK,
    }
    counter = "localseek_gateway_stream_continuations_total"
    assert _counter(url, counter, outcome="finished") == 1
