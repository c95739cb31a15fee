"""benchmarks/load_level.py: what a level's requests ask of a server, seen by a real loopback one."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from load_level import run_level


@pytest.fixture
def recording_server():
    """A streaming /v1/completions stand-in that records each request body and answers with
    one token per request."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            event = {"choices": [{"index": 0, "text": "x"}]}
            payload = f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def test_requests_are_greedy_unless_a_temperature_is_given(recording_server):
    base, bodies = recording_server
    greedy = run_level(base, [[1, 2, 3]], 4)
    sampled = run_level(base, [[4, 5], [6]], 4, temperature=0.7)
    assert greedy.tokens == 1 and sampled.tokens == 2
    assert [b["temperature"] for b in bodies] == [0.0, 0.7, 0.7]
    assert all(b["ignore_eos"] and b["max_tokens"] == 4 and b["stream"] for b in bodies)
    assert sorted(b["prompt"] for b in bodies[1:]) == [[4, 5], [6]]
