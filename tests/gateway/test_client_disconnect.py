"""A client that leaves a streamed request gives its upstream slot and connection back.

Two moments: before the first byte (the upstream has not answered yet, so the gateway's
streaming body never starts) and mid-stream. Either way the upstream's in-flight count at
the gateway returns to 0 and the upstream sees its stream closed.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx

from .conftest import chat


def send_and_leave(url: str, body: dict, leave_after_s: float, read_first: bool = False) -> bytes:
    """POST a streamed request over a raw socket, then close it without reading the answer."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + payload)
        if read_first:
            received = sock.recv(65536)
        time.sleep(leave_after_s)
    return received


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def gateway_in_flight(url: str) -> int:
    upstreams = httpx.get(url + "/health", timeout=5).json()["upstreams"]
    return sum(u["in_flight"] for u in upstreams)


def test_client_gone_before_the_first_byte_releases_the_upstream(fake, gateway):
    # A long answer, so the slot cannot come back by the stream simply finishing.
    slow = fake("slow", latency_s=1.0, token_delay_s=0.2, answer_tokens=100)
    url = gateway({"upstreams": [slow.upstream()]})
    send_and_leave(url, chat(stream=True, max_tokens=100), leave_after_s=0.2)
    assert wait_until(lambda: len(slow.completions()) == 1)
    # The upstream answers after the client left: the gateway must close it and free the slot.
    assert wait_until(lambda: gateway_in_flight(url) == 0), "gateway slot leaked"
    assert wait_until(lambda: slow.state.in_flight == 0), "upstream stream left open"
    # And the gateway still serves: the slot is really back.
    reply = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10)
    assert reply.status_code == 200


def test_client_gone_mid_stream_closes_the_upstream_stream(fake, gateway):
    slow = fake("trickle", token_delay_s=0.2, answer_tokens=100)
    url = gateway({"upstreams": [slow.upstream()]})
    first = send_and_leave(url, chat(stream=True, max_tokens=100), 0.5, read_first=True)
    assert b"200 OK" in first
    assert wait_until(lambda: gateway_in_flight(url) == 0), "gateway slot leaked"
    assert wait_until(lambda: slow.state.in_flight == 0), "upstream stream left open"
