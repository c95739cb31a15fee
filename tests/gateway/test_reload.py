"""Config reload (POST /admin/reload, SIGHUP): in-flight requests finish, bad configs are refused."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
import yaml

from .fakes import full_answer
from .servers import spawn_gateways, stop_process, wait_http
from .versioned import ADMIN, ask, config, front_factory, versions


@pytest.fixture
def front(fake, tmp_path):
    yield from front_factory(fake, tmp_path)


def test_reload_keeps_in_flight_streams_and_applies_the_new_config(front):
    url, path = front()
    slow = httpx.put(
        url + "/admin/models/r1/weights",
        json={"weights": {"stable": 100, "canary": 0}},
        headers=ADMIN,
    )
    assert slow.status_code == 200
    data = yaml.safe_load(path.read_text())
    stable_url = data["upstreams"][0]["url"][: -len("/v1")]
    httpx.post(stable_url + "/_control", json={"token_delay_s": 0.03, "answer_tokens": 40})

    body = {"model": "r1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as stream:
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "chunk-stable-pool" in first  # the stream has started on the stable pool
        text = "".join(_contents([first]))

        data["models"] = [versions(stable=0, canary=100)]
        path.write_text(yaml.safe_dump(data))
        reloaded = httpx.post(url + "/admin/reload", headers=ADMIN, timeout=10)
        assert reloaded.status_code == 200, reloaded.text
        assert ask(url, "new-session")[0] == "canary"  # new requests see the new config

        text += "".join(_contents(lines))
    assert text == full_answer(40)  # the whole answer, though its config was replaced mid-way


def _contents(lines):
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                yield (choice.get("delta") or {}).get("content") or ""


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(front):
    url, path = front()
    good = path.read_text()
    unserved = yaml.safe_load(good)
    unserved["models"][0]["versions"][1]["model"] = "r1-v9"
    for bad in (
        "upstreams: [",  # not YAML
        good + "\nsurprise: 1\n",  # unknown field
        yaml.safe_dump(unserved),  # a version no upstream serves
    ):
        path.write_text(bad)
        resp = httpx.post(url + "/admin/reload", headers=ADMIN)
        assert resp.status_code == 400, bad
        error = resp.json()["error"]
        assert error["code"] == "config_invalid" and "keeps serving" in error["message"]
        assert ask(url, "s1")[1] in ("stable-pool", "canary-pool")
    metrics = httpx.get(url + "/metrics").text
    assert 'localseek_gateway_config_reloads_total{outcome="refused"} 3.0' in metrics


def test_sighup_reloads_a_gateway_process(fake, tmp_path):
    pools = fake("stable-pool"), fake("canary-pool")
    data = config(pools[0].url, pools[1].url)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    [(proc, url)] = spawn_gateways(path, 1)
    try:
        data["models"] = [versions(stable=1, canary=99)]
        path.write_text(yaml.safe_dump(data))
        proc.send_signal(signal.SIGHUP)

        def weights() -> list[int]:
            listing = httpx.get(url + "/admin/models", headers=ADMIN).json()
            return [v["weight"] for v in listing["models"]["r1"]["versions"]]

        deadline = time.monotonic() + 20
        while weights() != [1, 99] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert weights() == [1, 99]
        assert proc.poll() is None  # SIGHUP did not stop it
        wait_http(url + "/health", proc)
    finally:
        stop_process(proc)
