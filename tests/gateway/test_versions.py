"""Model versions: weighted, sticky routing of a public name; admin weights, promote, rollback."""

from __future__ import annotations

import json
import random
from collections import Counter

import httpx
import pytest

from localseek.errors import InvalidRequestError, NotFoundError
from localseek.gateway.config import parse_gateway_config
from localseek.gateway.versions import PublicModelConfig, VersionConfig, VersionRouter

from .versioned import ADMIN, ask, config, front_factory, versions


@pytest.fixture
def front(fake, tmp_path):
    yield from front_factory(fake, tmp_path)


def test_router_weights_are_cumulative_slices_of_a_stable_hash():
    model = PublicModelConfig(
        name="r1",
        versions=(VersionConfig("stable", "a", 90), VersionConfig("canary", "b", 10)),
    )
    router = VersionRouter((model,), random.Random(0))
    before = {f"s{i}": router.route("r1", f"s{i}").version for i in range(2000)}
    share = Counter(before.values())["canary"] / len(before)
    assert 0.07 < share < 0.13
    router.set_weights("r1", {"stable": 80, "canary": 20})
    after = {k: router.route("r1", k).version for k in before}
    # Shifting 10 points moves only stable sessions to the canary, never the other way.
    assert all(after[k] == "canary" for k, v in before.items() if v == "canary")
    assert 0.17 < Counter(after.values())["canary"] / len(after) < 0.23
    assert router.rollback("r1") == {"stable": 90, "canary": 10}
    assert {k: router.route("r1", k).version for k in before} == before
    with pytest.raises(InvalidRequestError):
        router.rollback("r1")
    with pytest.raises(NotFoundError):
        router.promote("r1", "nope")
    with pytest.raises(InvalidRequestError):
        router.set_weights("r1", {"stable": 0, "canary": 0})


def test_sessions_split_by_weight_and_stay_on_their_version(front):
    url, _ = front()
    seen = [ask(url, f"session-{i}") for i in range(60)]
    for version, served_by, model in seen:
        assert (served_by, model) == {
            "stable": ("stable-pool", "r1-v1"),
            "canary": ("canary-pool", "r1-v2"),
        }[version]
    counts = Counter(v for v, _, _ in seen)
    assert counts["stable"] > counts["canary"] > 0
    for i in range(0, 60, 7):  # a conversation's later turns land where its first did
        assert ask(url, f"session-{i}")[0] == seen[i][0]
    models = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
    assert models[0] == "r1" and "r1-v1" in models
    metrics = httpx.get(url + "/metrics").text
    line = 'localseek_gateway_version_requests_total{model="r1",status="200",version="canary"}'
    assert (
        f"{line} {float(counts['canary'] + sum(1 for i in range(0, 60, 7) if seen[i][0] == 'canary'))}"
        in metrics
    )
    assert 'localseek_gateway_version_weight{model="r1",version="stable"} 90.0' in metrics
    assert "localseek_gateway_requests_total" in metrics  # the gateway app's own metrics too


def test_tenant_stickiness_keeps_each_tenant_on_one_version(front):
    tenants = [{"name": f"t{i}", "api_keys": [f"key-{i}"]} for i in range(12)]
    url, _ = front(models=[versions(50, 50, sticky="tenant")], tenants=tenants)
    first = {i: ask(url, key=f"key-{i}")[0] for i in range(12)}
    assert set(first.values()) == {"stable", "canary"}
    for i in range(12):
        assert ask(url, session=f"other-{i}", key=f"key-{i}")[0] == first[i]


def test_admin_shifts_promotes_and_rolls_back(front):
    url, _ = front()
    admin = url + "/admin/models/r1"
    assert httpx.get(url + "/admin/models").status_code == 401
    bad = httpx.get(url + "/admin/models", headers={"authorization": "Bearer wrong"})
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"

    shifted = httpx.put(
        admin + "/weights", json={"weights": {"canary": 100, "stable": 0}}, headers=ADMIN
    )
    assert shifted.status_code == 200 and shifted.json()["percent"] == {
        "stable": 0.0,
        "canary": 100.0,
    }
    assert {ask(url, f"s{i}")[0] for i in range(10)} == {"canary"}

    assert (
        httpx.post(admin + "/promote", json={"version": "stable"}, headers=ADMIN).status_code == 200
    )
    assert {ask(url, f"s{i}")[0] for i in range(10)} == {"stable"}

    back = httpx.post(admin + "/rollback", headers=ADMIN)
    assert back.json()["weights"] == {"stable": 0, "canary": 100}
    assert httpx.post(admin + "/rollback", headers=ADMIN).json()["weights"] == {
        "stable": 90,
        "canary": 10,
    }
    refused = httpx.post(admin + "/rollback", headers=ADMIN)
    assert refused.status_code == 400 and "no earlier weights" in refused.json()["error"]["message"]

    unknown = httpx.post(admin + "/promote", json={"version": "v9"}, headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "version_not_found"
    for body in (b"not json", b"[1]", b'{"weights": {"stable": -1}}', b'{"weights": 5}'):
        resp = httpx.put(admin + "/weights", content=body, headers=ADMIN)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["type"] == "invalid_request_error"
    wrong_method = httpx.get(admin + "/rollback", headers=ADMIN)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    unknown_model = httpx.post(url + "/admin/models/none/rollback", headers=ADMIN)
    assert (
        unknown_model.status_code == 404
        and "versioned models" in unknown_model.json()["error"]["message"]
    )


def test_admin_api_is_disabled_without_keys(front):
    url, _ = front(admin={})
    resp = httpx.get(url + "/admin/models", headers=ADMIN)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "admin_disabled"


def test_config_rejects_a_version_no_upstream_serves():
    data = config("http://127.0.0.1:1", "http://127.0.0.1:2")
    data["models"][0]["versions"][1]["model"] = "r1-v3"
    with pytest.raises(Exception, match="r1-v3"):
        parse_gateway_config(data)


def test_a_versioned_request_body_is_bounded_while_the_front_reads_it(front):
    """The front reads a completion body to pick its version: over max_body_bytes (valid JSON
    or a truncated body) the answer is the 413, and neither pool sees the request. The front
    wraps that read in the same BodyLimitMiddleware as the generation's app, so it stops
    reading at the limit rather than buffering the whole body first."""
    url, _ = front(max_body_bytes=4096)
    for body in (b'{"model": "r1", "messages": [' + b" " * 10_000, json.dumps(chat(10_000))):
        r = httpx.post(url + "/v1/chat/completions", content=body)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert [len(pool.completions()) for pool in front.pools] == [0, 0]
    assert ask(url)[0] in ("stable", "canary")  # a normal request still goes through
    assert sum(len(pool.completions()) for pool in front.pools) == 1


def chat(size: int) -> dict:
    return {"model": "r1", "messages": [{"role": "user", "content": "x" * size}]}
