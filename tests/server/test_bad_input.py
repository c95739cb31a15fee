"""Every client mistake is a 4xx in OpenAI's error shape naming the field; never a 5xx."""

from __future__ import annotations

import httpx
import pytest
from conftest import SERVED, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_values import any_json

pytestmark = pytest.mark.timeout(180)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def small_server(engine):
    with serve(engine, max_n=4, max_tokens_limit=64, max_body_bytes=64 * 1024) as live:
        yield live


@pytest.fixture(scope="module")
def http(small_server):
    with httpx.Client(base_url=small_server.url, timeout=60) as client:
        yield client


def assert_error(resp: httpx.Response, status: int, param: str | None = None, text: str = ""):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param, error
    assert text in error["message"], error
    return error


def test_malformed_json(http):
    resp = http.post(
        CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    )
    assert_error(resp, 400, text="JSON")


def test_missing_messages(http):
    assert_error(http.post(CHAT, json={"model": SERVED}), 400, "messages", "required")


def test_wrong_types_name_the_field(http):
    resp = http.post(CHAT, json={"messages": MESSAGES, "temperature": "hot"})
    assert_error(resp, 400, "temperature", "'hot'")
    resp = http.post(CHAT, json={"messages": [{"role": "user", "content": 5}]})
    assert_error(resp, 400)
    assert resp.json()["error"]["param"].startswith("messages.0.content")


def test_unknown_fields_are_a_400_naming_them(http):
    resp = http.post(
        CHAT,
        json={"messages": MESSAGES, "max_tokens": 2, "frobnicate": {"a": 1}, "max_token": 3},
    )
    error = assert_error(resp, 400, "frobnicate", "'frobnicate'")
    assert "'max_token'" in error["message"]


def test_unknown_model_is_404(http):
    error = assert_error(
        http.post(CHAT, json={"model": "nope", "messages": MESSAGES}), 404, "model", "nope"
    )
    assert error["code"] == "model_not_found"


def test_context_overflow_names_both_numbers(http, small_server):
    context = small_server.app.state.server.engine.max_model_len
    resp = http.post(COMPLETIONS, json={"prompt": "Hello", "max_tokens": 60})
    assert resp.status_code == 200  # fits
    long_prompt = list(range(10, 10 + context - 10))
    resp = http.post(COMPLETIONS, json={"prompt": long_prompt, "max_tokens": 20})
    error = assert_error(resp, 400, "max_tokens", str(context))
    assert str(len(long_prompt)) in error["message"] and error["code"] == "context_length_exceeded"
    too_long = list(range(10, 10 + context + 5))
    assert_error(http.post(COMPLETIONS, json={"prompt": too_long}), 400, "prompt", str(context))


def test_limits_on_n_and_max_tokens(http):
    assert_error(http.post(CHAT, json={"messages": MESSAGES, "n": 5}), 400, "n", "4")
    assert_error(
        http.post(CHAT, json={"messages": MESSAGES, "max_tokens": 65}), 400, "max_tokens", "64"
    )
    assert_error(
        http.post(CHAT, json={"messages": MESSAGES, "max_completion_tokens": 65}),
        400,
        "max_completion_tokens",
        "64",
    )


def test_oversized_body_is_413(http):
    resp = http.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 70_000}]})
    assert_error(resp, 413, text="65536")


def test_token_ids_outside_the_vocabulary(http):
    assert_error(http.post(COMPLETIONS, json={"prompt": [1, 2, 10**9]}), 400, "prompt", "vocab")


def test_prefix_only_on_a_final_assistant_message(http):
    resp = http.post(CHAT, json={"messages": [{"role": "user", "content": "a", "prefix": True}]})
    assert_error(resp, 400, text="prefix")


def test_bad_admission_headers(http):
    resp = http.post(CHAT, json={"messages": MESSAGES}, headers={"X-Priority": "high"})
    assert_error(resp, 400, "X-Priority", "'high'")
    resp = http.post(CHAT, json={"messages": MESSAGES}, headers={"X-Request-Timeout": "-1"})
    assert_error(resp, 400, "X-Request-Timeout")


def test_non_finite_numbers_are_rejected(http):
    body = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
    resp = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_error(resp, 400, "temperature")


def test_unknown_route_is_openai_shaped_404(http):
    assert_error(http.get("/v1/nothing"), 404, text="/v1/nothing")
    assert_error(http.delete(CHAT), 405, text="DELETE")


@pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
def test_lone_surrogates_are_400(http, route):
    field = b'"messages": [{"role": "user", "content": "a\\ud800b"}]'
    if route == COMPLETIONS:
        field = b'"prompt": "a\\udfffb"'
    resp = http.post(
        route, content=b"{" + field + b"}", headers={"content-type": "application/json"}
    )
    assert_error(resp, 400, text="surrogate")


def test_stop_strings_over_the_byte_cap_are_400(http):
    resp = http.post(CHAT, json={"messages": MESSAGES, "stop": ["x" * 9000, "y" * 9000]})
    assert_error(resp, 400, "stop", "16384")


# ---- property-based: arbitrary JSON bodies never produce a 5xx ------------------------------

_json = any_json()
# Valid values for every field; a body then has up to two fields replaced by arbitrary JSON,
# so most bodies reach the engine and the rest probe validation one field at a time.
_valid = {
    "model": st.sampled_from([SERVED, "deepseek-chat", "deepseek-reasoner", "other"]),
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system", "tool", "bogus"])},
            optional={"content": st.text(max_size=20), "prefix": st.booleans()},
        ),
        min_size=1,
        max_size=3,
    ),
    "prompt": st.text(min_size=1, max_size=20)
    | st.lists(st.integers(0, 600), min_size=1, max_size=6),
    "max_tokens": st.integers(1, 6),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "top_k": st.integers(-1, 10**6),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0.01, 100),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.text(min_size=1, max_size=4) | st.lists(st.text(min_size=1, max_size=4), max_size=3),
    "n": st.integers(1, 3),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "priority": st.integers(-100, 100),
    "min_tokens": st.integers(0, 10),
    "ignore_eos": st.booleans(),
    "stop_token_ids": st.lists(st.integers(0, 600), max_size=3),
}


@st.composite
def _bodies(draw):
    required = {k: v for k, v in _valid.items() if k in ("messages", "prompt")}
    optional = {k: v for k, v in _valid.items() if k not in required}
    body = draw(st.fixed_dictionaries(required, optional=optional))
    for name in draw(st.lists(st.sampled_from(sorted(_valid)), max_size=2, unique=True)):
        body[name] = draw(_json)
    return body


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_bodies(), route=st.sampled_from([CHAT, COMPLETIONS, "/beta/chat/completions"]))
def test_fuzzed_bodies_never_produce_a_5xx(http, body, route):
    resp = http.post(route, json=body)
    assert resp.status_code < 500, (body, resp.text)
    if resp.status_code >= 400:
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_fuzzed_raw_bytes_never_produce_a_5xx(http, raw):
    resp = http.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text


def test_the_engine_loop_survived_the_fuzzing(http, engine):
    assert engine.is_alive()
    assert http.get("/health").status_code == 200
    assert http.post(CHAT, json={"messages": MESSAGES, "max_tokens": 2}).status_code == 200


def test_no_disk_path_is_shown_without_a_served_model_name(engine, tiny_model_dir):
    with serve(engine, served_model_name=None) as live:
        ids = [m["id"] for m in httpx.get(live.url + "/v1/models").json()["data"]]
        assert ids[0] == tiny_model_dir.name and not any("/" in m for m in ids)
        resp = httpx.post(live.url + CHAT, json={"model": "other", "messages": MESSAGES})
        error = assert_error(resp, 404, "model", repr(tiny_model_dir.name))  # the ids it serves
        assert str(tiny_model_dir.parent) not in error["message"]
        ok = httpx.post(
            live.url + CHAT, json={"model": ids[0], "messages": MESSAGES, "max_tokens": 2}
        )
        assert ok.status_code == 200 and ok.json()["model"] == ids[0]
