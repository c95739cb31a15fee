"""A full server refuses before it parses, renders or tokenizes: the 429 comes first.

Shown with requests that would fail later: malformed JSON (a 400 found by the parser) is
refused before parsing; a body that sets `priority` must be parsed, and is refused before
rendering (a lone surrogate is a 400 found only then). Once the slot frees, each gets its 400.
What comes before the refusal still does: a wrong API key is a 401.
"""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import engine_config, serve, wait_until

pytestmark = pytest.mark.timeout(120)

JSON = {"content-type": "application/json"}
ROUTES = [
    f"{prefix}{route}"
    for prefix in ("/v1", "", "/beta")
    for route in ("/chat/completions", "/completions")
]
MALFORMED = b'{"messages": [{"role": "user", "content": "unfinished'
# Valid JSON that sets `priority`, then fails while the prompt is rendered or tokenized.
UNRENDERABLE = [
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "a\\ud800"}], "priority": 0}',
    ),
    ("/v1/completions", b'{"prompt": "a\\udfff", "priority": 0}'),
]
LONG = {"prompt": "Once", "max_tokens": 400, "ignore_eos": True, "stream": True}


@pytest.fixture(scope="module")
def one_slot_engine(tiny_model_dir):
    from localseek.engine.async_engine import AsyncEngine

    eng = AsyncEngine.from_config(engine_config(tiny_model_dir, max_num_seqs=1))
    yield eng
    eng.shutdown()


@contextlib.contextmanager
def holding_the_slot(http: httpx.Client, engine, headers: dict | None = None):
    """A long streamed request runs in the only slot until the block ends."""
    with http.stream("POST", "/v1/completions", json=LONG, headers=headers, timeout=60) as busy:
        assert busy.status_code == 200
        assert wait_until(lambda: engine.stats().num_running == 1)
        yield


def counter(metrics: str, name: str, label: str) -> float:
    match = re.search(rf"^localseek:{name}\{{{label}\}} (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def assert_overloaded(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "server_overloaded"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1


def test_a_full_server_refuses_before_parsing(one_slot_engine):
    # While the server is full it says "busy" before it reads the request (as OpenAI's API
    # does): even malformed JSON gets the 429, and its retry gets the 400.
    with serve(one_slot_engine, max_queue=0) as live, httpx.Client(base_url=live.url) as http:
        with holding_the_slot(http, one_slot_engine):
            for route in ROUTES:
                assert_overloaded(http.post(route, content=MALFORMED, headers=JSON))
        assert wait_until(lambda: live.app.state.server.gate.queue.free_slots == 1)
        for route in ROUTES:
            assert http.post(route, content=MALFORMED, headers=JSON).status_code == 400


def test_a_body_that_sets_priority_is_refused_before_rendering(one_slot_engine):
    with serve(one_slot_engine, max_queue=0) as live, httpx.Client(base_url=live.url) as http:
        with holding_the_slot(http, one_slot_engine):
            for route, body in UNRENDERABLE:
                assert_overloaded(http.post(route, content=body, headers=JSON))
        assert wait_until(lambda: live.app.state.server.gate.queue.free_slots == 1)
        for route, body in UNRENDERABLE:
            assert http.post(route, content=body, headers=JSON).status_code == 400


def test_a_wrong_api_key_is_401_even_when_full(one_slot_engine):
    key = {"authorization": "Bearer right"}
    body = {"prompt": "Hello", "max_tokens": 1}
    with (
        serve(one_slot_engine, max_queue=0, api_key="right") as live,
        httpx.Client(base_url=live.url) as http,
        holding_the_slot(http, one_slot_engine, headers=key),
    ):
        for route in ("/v1/completions", "/v1/chat/completions"):
            for headers in ({}, {"authorization": "Bearer wrong"}):
                refused = http.post(route, json=body, headers=headers)
                assert refused.status_code == 401, refused.text
        assert_overloaded(http.post("/v1/completions", json=body, headers=key))


@pytest.mark.parametrize(
    "better",
    [
        b'{"prompt": "Hello", "max_tokens": 2, "priority": 1}',
        b'{"prompt": "Hello", "max_tokens": 2, "\\u0070riority": 1}',  # the same key, escaped
    ],
)
def test_a_request_admission_would_take_is_let_through(one_slot_engine, better: bytes):
    # One slot and one queue place. The waiter has priority 5: a request at priority 9 is
    # refused by its header alone, while one whose body asks for priority 1 (the body wins over
    # the header) displaces the waiter and is served.
    def send(body: bytes, headers: dict) -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            return client.post("/v1/completions", content=body, headers={**JSON, **headers})

    quick = b'{"prompt": "Hello", "max_tokens": 2}'
    low = {"X-Priority": "9"}
    with (
        serve(one_slot_engine, max_queue=1) as live,
        httpx.Client(base_url=live.url) as http,
        ThreadPoolExecutor(2) as pool,
    ):
        queue = live.app.state.server.gate.queue
        with holding_the_slot(http, one_slot_engine):
            waiter = pool.submit(send, quick, {"X-Priority": "5"})
            assert wait_until(lambda: len(queue.waiting) == 1)
            assert_overloaded(send(quick, low))
            served = pool.submit(send, better, low)
            assert wait_until(lambda: [t.priority for t in queue.waiting] == [1])
        assert_overloaded(waiter.result())  # displaced
        assert served.result().status_code == 200


def test_refusals_before_parsing_are_counted(one_slot_engine):
    with serve(one_slot_engine, max_queue=0) as live, httpx.Client(base_url=live.url) as http:
        with holding_the_slot(http, one_slot_engine):
            for route in ROUTES:
                assert_overloaded(http.post(route, content=MALFORMED, headers=JSON))
            metrics = http.get("/metrics").text
    refused = counter(metrics, "requests_refused_total", 'reason="queue_full"')
    assert refused == len(ROUTES)
    assert counter(metrics, "request_errors_total", 'status="429"') == len(ROUTES)
