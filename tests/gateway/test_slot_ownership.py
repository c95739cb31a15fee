"""Every upstream slot comes back: a failure at any stage of a request leaves nothing in flight.

The stages: the body (cannot be encoded for an upstream), the connection (refused), the
upstream's answer (4xx, 5xx), the client (gone before or during the stream), the stream (cut
by the upstream). After each, the gateway's in-flight count is 0 and it still serves.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from localseek.api.body_limit import BodyLimitMiddleware
from localseek.errors import InvalidRequestError
from localseek.gateway.balancer import Balancer
from localseek.gateway.config import parse_gateway_config
from localseek.gateway.dispatch import Dispatcher
from localseek.gateway.policy import Classification
from localseek.gateway.proxy import Attempts, Forwarder
from localseek.gateway.request import GatewayRequest
from localseek.gateway.slot_queue import SlotQueue
from localseek.gateway.tenants import ANONYMOUS
from localseek.gateway.upstream import Upstream
from localseek.ops.metrics.gateway import GatewayMetrics

from .conftest import chat
from .fakes import FakeState, make_app
from .servers import ServerThread, free_port
from .test_client_disconnect import gateway_in_flight, send_and_leave, wait_until

CONTENT_TYPE = {"content-type": "application/json"}
MESSAGES = b'"messages":[{"role":"user","content":"w5"}]'
# The reproduction: fields the gateway does not check, holding what JSON cannot carry.
UNENCODABLE = [
    b'{"model":"tiny","max_tokens":2,"frequency_penalty":NaN,' + MESSAGES + b"}",
    b'{"model":"tiny","presence_penalty":-Infinity,' + MESSAGES + b"}",
    b'{"model":"tiny","messages":[{"role":"user","content":"\\ud800"}]}',
    b'{"model":"tiny","metadata":' + b"[" * 500 + b"]" * 500 + b"," + MESSAGES + b"}",
    b'{"model":"tiny","metadata":' + b"[" * 50_000 + b"]" * 50_000 + b"," + MESSAGES + b"}",
]


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


@pytest.fixture
def local_and_cloud(fake, gateway):
    """A 4-slot local replica and a 4-slot cloud, as in the issue's report."""
    local = fake("local")
    cloud = fake("cloud")
    url = gateway(
        {
            "upstreams": [
                local.upstream(max_concurrency=4),
                cloud.upstream(kind="cloud", max_concurrency=4),
            ]
        }
    )
    return local, cloud, url


def test_unencodable_bodies_are_400_and_hold_no_slot(local_and_cloud):
    local, cloud, url = local_and_cloud
    for body in UNENCODABLE * 2:  # more requests than both upstreams have slots together
        r = httpx.post(url + "/v1/chat/completions", content=body, headers=CONTENT_TYPE)
        assert assert_openai_error(r, 400)["type"] == "invalid_request_error"
        assert gateway_in_flight(url) == 0
    assert local.completions() == [] and cloud.completions() == []
    ok = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert ok.status_code == 200 and ok.json()["served_by"] == "local"


def test_connect_refused_is_502_and_holds_no_slot(gateway):
    url = gateway({"upstreams": [{"name": "gone", "url": f"http://127.0.0.1:{free_port()}/v1"}]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert assert_openai_error(r, 502)["type"] == "upstream_error"
    assert gateway_in_flight(url) == 0


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_upstream_4xx_is_the_clients_and_leaves_the_circuit_closed(fake, gateway, status):
    a = fake("a", fail_status=status)
    url = gateway({"upstreams": [a.upstream()]})
    for _ in range(3):  # more than failure_threshold (2)
        r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
        assert_openai_error(r, status)
    health = httpx.get(url + "/health").json()
    assert health["upstreams"][0]["circuit"] == "closed"
    assert gateway_in_flight(url) == 0


def test_a_replicas_body_limit_is_a_413_not_a_replica_failure(gateway):
    """The replica refuses a body its limit (the server's own middleware) does not allow."""
    state = FakeState("small")
    replica = ServerThread(BodyLimitMiddleware(make_app(state), max_body_bytes=100_000)).start()
    try:
        url = gateway({"upstreams": [{"name": "small", "url": replica.url + "/v1"}]})
        big = chat("x" * 500_000)  # under the gateway's limit, 5x the replica's
        for _ in range(3):
            r = httpx.post(url + "/v1/chat/completions", json=big, timeout=10)
            assert assert_openai_error(r, 413)["code"] == "payload_too_large"
        assert httpx.get(url + "/health").json()["upstreams"][0]["circuit"] == "closed"
        assert gateway_in_flight(url) == 0
        assert httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10).status_code == 200
    finally:
        replica.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_5xx_is_502_and_holds_no_slot(fake, gateway, stream):
    a = fake("a", fail_status=500)
    url = gateway({"upstreams": [a.upstream()]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(stream=stream), timeout=10)
    assert_openai_error(r, 502)
    assert gateway_in_flight(url) == 0


def test_stream_cut_with_nowhere_to_continue_holds_no_slot(fake, gateway):
    a = fake("a", die_after_chunks=2)
    url = gateway({"upstreams": [a.upstream()]})
    r = httpx.post(url + "/v1/chat/completions", json=chat(stream=True), timeout=10)
    assert r.status_code == 200 and '"stream_interrupted"' in r.text
    assert gateway_in_flight(url) == 0


def test_client_gone_holds_no_slot(fake, gateway):
    a = fake("a", latency_s=0.5, token_delay_s=0.1, answer_tokens=50)
    url = gateway({"upstreams": [a.upstream()]})
    send_and_leave(url, chat(stream=True, max_tokens=50), leave_after_s=0.1)
    send_and_leave(url, chat(max_tokens=50), leave_after_s=0.1)
    send_and_leave(url, chat(stream=True, max_tokens=50), 0.8, read_first=True)
    assert wait_until(lambda: len(a.completions()) == 3)
    assert wait_until(lambda: gateway_in_flight(url) == 0), "gateway slot leaked"


def _forwarder(url: str) -> tuple[Forwarder, Upstream]:
    config = parse_gateway_config({"upstreams": [{"name": "a", "url": url + "/v1"}]})
    upstream = Upstream(config.upstreams[0], config.health, config.admission, time.monotonic)
    metrics = GatewayMetrics(CollectorRegistry())
    dispatcher = Dispatcher(
        Balancer([upstream], config.balancer), SlotQueue(4), config.admission, metrics
    )
    return Forwarder(dispatcher, config.admission, metrics), upstream


@pytest.mark.parametrize("error", [InvalidRequestError("bad body"), RuntimeError("a bug")])
def test_a_failure_while_building_the_upstream_request_returns_the_slot(fake, error):
    a = fake("a")
    forwarder, upstream = _forwarder(a.url)

    def build(_: Upstream) -> dict:
        assert upstream.in_flight == 1  # built while the slot is held
        raise error

    async def attempt() -> None:
        req = GatewayRequest(
            route="chat",
            body=chat(),
            tenant=ANONYMOUS,
            classification=Classification(False, "none"),
            estimated_tokens=10,
            deadline=asyncio.get_running_loop().time() + 10,
            affinity_key=None,
            cache_key=None,
        )
        try:
            with pytest.raises(type(error)):
                await forwarder.open(req, build, Attempts(), stream=False)
        finally:
            await upstream.aclose()

    asyncio.run(attempt())
    assert upstream.in_flight == 0
    assert upstream.circuit.state == "closed"
    assert a.completions() == []
