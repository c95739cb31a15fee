"""Bad requests get OpenAI-shaped 4xx from the gateway itself; nothing reaches an upstream."""

from __future__ import annotations

import httpx
import pytest

from .conftest import chat


@pytest.fixture
def setup(fake, gateway):
    a = fake("a")
    url = gateway(
        {"upstreams": [a.upstream(models=["m"])], "tenants": [{"name": "t", "api_keys": ["sk-t"]}]}
    )
    return a, url


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": "m", "messages": []}', 400, "messages"),
        (b'{"model": "m", "messages": ["hi"]}', 400, "messages[0]"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            400,
            "temperature",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            400,
            "max_tokens",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            400,
            "stream",
        ),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
def test_malformed_requests_are_openai_shaped_4xx(setup, body, status, param):
    a, url = setup
    r = httpx.post(
        url + "/v1/chat/completions",
        content=body,
        headers={"Authorization": "Bearer sk-t", "Content-Type": "application/json"},
    )
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert a.completions() == []


def test_missing_or_wrong_key_is_401(setup):
    a, url = setup
    assert httpx.post(url + "/v1/chat/completions", json=chat()).status_code == 401
    r = httpx.post(
        url + "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-x"}
    )
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert a.completions() == []


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_unknown_route_and_wrong_method_are_openai_shaped(setup):
    _, url = setup
    assert _openai_error(httpx.get(url + "/v1/nothing"), 404)["type"] == "not_found_error"
    error = _openai_error(httpx.get(url + "/v1/chat/completions"), 405)
    assert "GET" in error["message"]


def test_body_over_the_limit_is_413_before_parsing_and_never_forwarded(fake, gateway):
    a = fake("a")
    url = gateway({"upstreams": [a.upstream()], "max_body_bytes": 4096})
    big = chat("x" * 10_000)
    error = _openai_error(httpx.post(url + "/v1/chat/completions", json=big), 413)
    assert error["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(
        url + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert _openai_error(r, 413)["code"] == "payload_too_large"
    assert a.completions() == []
    assert httpx.post(url + "/v1/chat/completions", json=chat()).status_code == 200
