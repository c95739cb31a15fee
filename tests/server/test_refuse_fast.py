"""A full server refuses before it renders or tokenizes: the 429 comes first.

Shown with requests that would fail while being rendered (a lone surrogate is a 400 found only
then): while the only slot is taken and no queue is allowed, they get 429; once it frees, 400.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import engine_config, serve, wait_until

pytestmark = pytest.mark.timeout(120)

BROKEN = [
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\ud800"}]}'),
    ("/v1/completions", b'{"prompt": "a\\udfff"}'),
]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def one_slot_engine(tiny_model_dir):
    from localseek.engine.async_engine import AsyncEngine

    eng = AsyncEngine.from_config(engine_config(tiny_model_dir, max_num_seqs=1))
    yield eng
    eng.shutdown()


def test_a_full_server_refuses_before_rendering(one_slot_engine):
    long = {"prompt": "Once", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with serve(one_slot_engine, max_queue=0) as live, httpx.Client(base_url=live.url) as http:
        with http.stream("POST", "/v1/completions", json=long, timeout=60) as busy:
            assert busy.status_code == 200
            assert wait_until(lambda: one_slot_engine.stats().num_running == 1)
            for route, body in BROKEN:
                refused = http.post(route, content=body, headers=JSON)
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "server_overloaded"
                assert int(refused.headers["retry-after"]) >= 1
        assert wait_until(lambda: live.app.state.server.gate.queue.free_slots == 1)
        for route, body in BROKEN:
            assert http.post(route, content=body, headers=JSON).status_code == 400
