"""Upstreams that are not localseek: their health path and load signal, over loopback HTTP.

Each stand-in serves what that server exposes (vLLM's and llama-server's Prometheus gauges,
Ollama's bare `/`), plus the recording fake's completions. The last test runs the gateway over
a real llama.cpp `llama-server` beside a localseek replica; it needs LLAMA_SERVER=path.
"""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute

from localseek.gateway.server_kinds import SERVER_KINDS

from .conftest import chat
from .fakes import FakeState, make_app
from .servers import ServerThread, free_port, stop_process, wait_http
from .test_client_disconnect import wait_until

METRICS = {
    "vllm": (
        "# HELP vllm:num_requests_running Number of requests running.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} 3.0\n'
        "# HELP vllm:num_requests_waiting Number of requests waiting.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m"} 4.0\n'
    ),
    "llama_cpp": (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        "llamacpp:requests_processing 2\n"
        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
        "# TYPE llamacpp:requests_deferred gauge\n"
        "llamacpp:requests_deferred 5\n"
    ),
}


def stand_in(server: str) -> ServerThread:
    app = make_app(FakeState(server))
    if server in METRICS:
        app.add_api_route("/metrics", lambda: PlainTextResponse(METRICS[server]), methods=["GET"])
    if server == "ollama":  # no /health: GET / is its liveness answer
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/health"]
        app.add_api_route("/", lambda: PlainTextResponse("Ollama is running"), methods=["GET"])
    return ServerThread(app).start()


@pytest.mark.parametrize(("server", "load"), [("vllm", 7), ("llama_cpp", 7), ("ollama", 0)])
def test_health_and_load_are_read_the_way_each_server_exposes_them(gateway, server, load):
    upstream = stand_in(server)
    try:
        url = gateway(
            {"upstreams": [{"name": server, "url": upstream.url + "/v1", "server": server}]}
        )
        state = lambda: httpx.get(url + "/health").json()["upstreams"][0]  # noqa: E731
        assert wait_until(lambda: state()["load"] == load), state()
        assert state()["circuit"] == "closed"  # its health path answered
        reply = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
        assert reply.status_code == 200 and reply.json()["served_by"] == server
    finally:
        upstream.stop()


def test_a_localseek_health_path_on_ollama_would_open_its_circuit(gateway):
    upstream = stand_in("ollama")
    try:
        url = gateway({"upstreams": [{"name": "o", "url": upstream.url + "/v1"}]})
        assert wait_until(
            lambda: httpx.get(url + "/health").json()["upstreams"][0]["circuit"] != "closed"
        )
    finally:
        upstream.stop()


OLLAMA_BUSY = {"error": "server busy, please try again.  maximum pending requests exceeded"}


def busy_ollama() -> ServerThread:
    """Ollama past OLLAMA_MAX_QUEUE: a 503 with its "server busy" message, no Retry-After."""
    app = make_app(FakeState("ollama"))
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/health"]
    app.add_api_route("/", lambda: PlainTextResponse("Ollama is running"), methods=["GET"])
    for path in ("/v1/chat/completions", "/v1/completions"):  # ahead of the fake's own routes
        app.router.routes.insert(
            0, APIRoute(path, lambda: JSONResponse(OLLAMA_BUSY, 503), methods=["POST"])
        )
    return ServerThread(app).start()


@pytest.mark.parametrize("server", ["ollama", "openai"])
def test_ollamas_busy_503_is_a_refusal_for_load_not_a_fault(gateway, server):
    """Told it is Ollama, the gateway reads "server busy" as a 429: the client is asked to retry
    later and the replica stays healthy. The same answer from an unknown server is a fault."""
    upstream = busy_ollama()
    try:
        config = {"name": "o", "url": upstream.url + "/v1", "server": server, "probe": False}
        url = gateway({"upstreams": [config]})
        reply = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
        errors = httpx.get(url + "/metrics").text
        if server == "ollama":
            assert reply.status_code == 429, reply.text
            assert reply.headers["retry-after"] == "1"
            assert reply.json()["error"]["type"] == "rate_limit_error"
            assert 'kind="status_429"' in errors and 'kind="status_5xx"' not in errors
        else:
            assert reply.status_code == 502, reply.text
            assert 'kind="status_5xx"' in errors
    finally:
        upstream.stop()


def test_a_busy_ollama_hands_the_request_to_another_replica(gateway, fake):
    upstream, replica = busy_ollama(), fake("replica")
    try:
        ollama = {"name": "o", "url": upstream.url + "/v1", "server": "ollama", "probe": False}
        url = gateway({"upstreams": [ollama, replica.upstream()]})
        for i in range(4):
            reply = httpx.post(url + "/v1/chat/completions", json=chat(f"q{i}"), timeout=10)
            assert reply.status_code == 200 and reply.json()["served_by"] == "replica"
    finally:
        upstream.stop()


@pytest.mark.parametrize(
    ("server", "status", "body", "headers", "busy"),
    [
        ("llama_cpp", 503, {"error": {"message": "Loading model", "code": 503}}, {}, True),
        ("llama_cpp", 503, {"error": {"message": "slot crashed"}}, {}, False),
        ("ollama", 503, OLLAMA_BUSY, {}, True),
        ("ollama", 500, OLLAMA_BUSY, {}, False),
        ("vllm", 503, {"error": "overloaded"}, {"Retry-After": "3"}, True),
        ("vllm", 503, {"error": "overloaded"}, {}, False),
        ("openai", 429, {}, {}, True),
    ],
)
def test_which_answers_mean_busy(server, status, body, headers, busy):
    response = httpx.Response(status, json=body, headers=headers)
    assert SERVER_KINDS[server].is_busy(response) is busy


@pytest.fixture
def llama_server(tmp_path):
    binary = os.environ.get("LLAMA_SERVER")
    if not binary:
        pytest.skip("set LLAMA_SERVER=path/to/llama-server to run the gateway over llama.cpp")
    from localseek.weights.default_model import default_model_path

    port = free_port()
    log = (tmp_path / "llama-server.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            "-m",
            str(default_model_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "2048",
            "-np",
            "2",
            "--metrics",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
        # it listens before its model is loaded, answering 503 "Loading model" until then
        health = lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code  # noqa: E731
        assert wait_until(lambda: health() == 200, 120), "llama-server never finished loading"
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def test_gateway_over_llama_server_and_a_localseek_replica(gateway, fake, llama_server):
    replica = fake("replica", latency_s=0.2)
    url = gateway(
        {
            "upstreams": [
                {"name": "llama", "url": llama_server + "/v1", "server": "llama_cpp"},
                replica.upstream(),
            ]
        }
    )
    ups = lambda: {u["name"]: u for u in httpx.get(url + "/health").json()["upstreams"]}  # noqa: E731
    assert wait_until(lambda: ups()["llama"]["circuit"] == "closed", 120)
    served = set()
    for i in range(6):
        r = httpx.post(
            url + "/v1/chat/completions", json=chat(f"say {i}", max_tokens=4), timeout=120
        )
        assert r.status_code == 200, r.text
        served.add(r.json().get("served_by", "llama"))
    assert served == {"llama", "replica"}
