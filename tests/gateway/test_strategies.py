"""Balancing strategies, each on its own: round robin, least load, affinity (objects, no HTTP)."""

from __future__ import annotations

import collections

import pytest

from localseek.gateway.balancer import Balancer
from localseek.gateway.config import BalancerConfig
from localseek.gateway.route import RouteRequest
from localseek.gateway.strategies import Affinity, LeastLoad, RoundRobin

from .test_balancer import Clock, make

REQ = RouteRequest("m")


@pytest.fixture
def ups():
    return make(Clock(), {"name": "a", "weight": 2}, {"name": "b"}, {"name": "c"})


def test_round_robin_follows_weights_smoothly_and_ignores_load(ups):
    a, b, c = ups
    for _ in range(50):
        a.acquire()  # load does not matter to round robin
    rr = RoundRobin()
    picks = [rr.choose(ups, REQ).name for _ in range(400)]
    assert collections.Counter(picks) == {"a": 200, "b": 100, "c": 100}
    assert all(picks[i : i + 4].count("a") == 2 for i in range(0, 400, 4))  # never bunched


def test_least_load_avoids_the_loaded_and_splits_ties_by_weight(ups):
    a, b, c = ups
    for _ in range(3):
        b.acquire()
    least = LeastLoad()
    assert {least.choose(ups, REQ).name for _ in range(20)} <= {"a", "c"}
    for _ in range(3):
        b.release()
    picks = collections.Counter(least.choose(ups, REQ).name for _ in range(400))
    assert picks == {"a": 200, "b": 100, "c": 100}


def test_affinity_sticks_to_a_key_and_falls_back_when_its_upstream_is_not_a_candidate(ups):
    a, b, c = ups
    sticky = Affinity(RoundRobin(), max_entries=2)
    keyed = RouteRequest("m", affinity_key="p:1")
    first = sticky.choose(ups, keyed)
    assert all(sticky.choose(ups, keyed) is first for _ in range(10))
    others = [u for u in ups if u is not first]
    moved = sticky.choose(others, keyed)  # its upstream is full or down: another, remembered
    assert moved is not first and sticky.choose(ups, keyed) is moved
    # Requests without a key are the inner strategy's alone, and the index stays bounded.
    assert collections.Counter(sticky.choose(ups, REQ).name for _ in range(40)) == {
        "a": 20,
        "b": 10,
        "c": 10,
    }
    for i in range(5):
        sticky.choose(ups, RouteRequest("m", affinity_key=f"p:{i + 2}"))
    assert len(sticky.index) == 2


def test_the_balancer_uses_the_configured_strategy():
    clock = Clock()
    ups = make(clock, {"name": "a"}, {"name": "b"})
    ups[0].acquire()
    ups[0].acquire()  # a is busier
    least = Balancer(ups, BalancerConfig())
    picked = least.pick_local(REQ)
    assert picked.name == "b"
    picked.release()
    rr = Balancer(ups, BalancerConfig(strategy="round_robin"))
    names = []
    for _ in range(4):
        chosen = rr.pick_local(REQ)
        names.append(chosen.name)
        chosen.release()
    assert sorted(names) == ["a", "a", "b", "b"]
