"""SIGTERM drains a real `localseek serve` process: new work 503, admitted work answered, exit 0."""

from __future__ import annotations

import signal
import threading

import httpx
import openai
import pytest
from conftest import wait_until
from serve_process import ServeProcess

pytestmark = pytest.mark.timeout(240)

LOAD = 8  # requests admitted before SIGTERM: 2 running, 6 waiting for a slot
TOKENS = 300


def _complete(url: str, results: list, i: int) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=180)
    try:
        if i % 2:
            stream = client.completions.create(
                model="tiny",
                prompt=f"request {i}",
                max_tokens=TOKENS,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            usage = [chunk.usage for chunk in stream if chunk.usage is not None]
            results.append(usage[-1].completion_tokens if usage else None)
        else:
            reply = client.completions.create(
                model="tiny",
                prompt=f"request {i}",
                max_tokens=TOKENS,
                extra_body={"ignore_eos": True},
            )
            results.append(reply.usage.completion_tokens)
    except Exception as exc:  # reported by the assertion below
        results.append(exc)


def test_sigterm_drains_admitted_requests_and_exits_zero(tiny_model_dir):
    with ServeProcess(tiny_model_dir, "--max-num-seqs", "2", "--drain-timeout", "120") as srv:
        results: list = []
        threads = [
            threading.Thread(target=_complete, args=(srv.url, results, i)) for i in range(LOAD)
        ]
        for t in threads:
            t.start()
        assert wait_until(lambda: httpx.get(srv.url + "/load").json()["queued"] == LOAD, 60)

        srv.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: httpx.get(srv.url + "/health").status_code == 503, 30)
        health = httpx.get(srv.url + "/health").json()
        assert "draining" in health["error"]["message"]
        refused = httpx.post(
            srv.url + "/v1/completions", json={"model": "tiny", "prompt": "late", "max_tokens": 2}
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "server_draining"

        for t in threads:
            t.join(timeout=180)
        assert srv.proc.wait(timeout=60) == 0, srv.stderr_tail()
    # Every admitted request, streamed or not, got its whole answer.
    assert results == [TOKENS] * LOAD, results
