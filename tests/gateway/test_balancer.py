"""Balancer: weights, least load, backups, affinity (objects only, no HTTP)."""

from __future__ import annotations

import collections

import httpx
import pytest

from localseek.gateway.affinity import AffinityIndex, affinity_key
from localseek.gateway.balancer import Balancer, RouteRequest
from localseek.gateway.config import BalancerConfig, DispatchConfig, HealthConfig, UpstreamConfig
from localseek.gateway.upstream import Upstream

from .conftest import chat


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, *specs: dict) -> list[Upstream]:
    return [
        Upstream(
            UpstreamConfig(url="http://127.0.0.1:9/v1", **s),
            HealthConfig(),
            DispatchConfig(),
            clock,
        )
        for s in specs
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_split_follows_weights_within_5_percent_and_backups_take_nothing(clock):
    ups = make(
        clock,
        {"name": "a", "weight": 5},
        {"name": "b", "weight": 3},
        {"name": "c", "weight": 2},
        {"name": "spare", "backup": True},
    )
    balancer = Balancer(ups, BalancerConfig())
    counts = collections.Counter()
    in_flight: collections.deque[Upstream] = collections.deque()
    for i in range(3000):
        chosen = balancer.pick_local(RouteRequest("m"))
        counts[chosen.name] += 1
        in_flight.append(chosen)
        # A varying number of requests stay in flight, so least-load decides too.
        while len(in_flight) > (i % 7):
            in_flight.popleft().release()
    for name, weight in (("a", 5), ("b", 3), ("c", 2)):
        assert abs(counts[name] / 3000 - weight / 10) < 0.05, counts
    assert counts["spare"] == 0


def test_least_load_per_weight_wins(clock):
    a, b = make(clock, {"name": "a"}, {"name": "b"})
    balancer = Balancer([a, b], BalancerConfig())
    for _ in range(3):
        a.acquire()
    assert balancer.pick_local(RouteRequest("m")) is b


def test_reported_load_and_own_in_flight_are_combined(clock):
    a, b = make(clock, {"name": "a"}, {"name": "b"})
    a.set_report(queued=10, capacity=None)  # other gateways' traffic, seen through /load
    assert a.load() == 10
    a.acquire()  # ours since the report
    assert a.load() == 11
    clock.now += 100  # a stale report is ignored: own count only
    assert a.load() == 1
    balancer = Balancer([a, b], BalancerConfig())
    clock.now = 0
    assert balancer.pick_local(RouteRequest("m")) is b


def test_backup_only_when_every_primary_is_down_or_full(clock):
    a, spare = make(clock, {"name": "a", "max_concurrency": 1}, {"name": "spare", "backup": True})
    balancer = Balancer([a, spare], BalancerConfig())
    assert balancer.pick_local(RouteRequest("m")) is a  # a is now full
    assert balancer.pick_local(RouteRequest("m")) is spare
    a.release()
    for _ in range(2):
        a.circuit.record_failure()  # opens after failure_threshold=2
    assert balancer.pick_local(RouteRequest("m")) is spare


def test_all_local_circuits_open_still_gets_a_last_resort_trial(clock):
    a, b = make(clock, {"name": "a"}, {"name": "b"})
    balancer = Balancer([a, b], BalancerConfig())
    a.circuit.record_failure(retry_after=50)
    b.circuit.record_failure(retry_after=10)
    assert balancer.pick_local(RouteRequest("m")) is None
    assert balancer.pick_local(RouteRequest("m"), last_resort=True) is b  # reopens soonest


def test_cloud_is_only_reached_through_pick_cloud(clock):
    local, cloud = make(
        clock, {"name": "local", "max_concurrency": 1}, {"name": "cloud", "kind": "cloud"}
    )
    balancer = Balancer([local, cloud], BalancerConfig())
    assert balancer.pick_local(RouteRequest("m")) is local
    assert balancer.pick_local(RouteRequest("m"), last_resort=True) is None
    assert balancer.pick_cloud(RouteRequest("m")) is cloud


def test_excluded_and_non_serving_upstreams_are_skipped(clock):
    a, b = make(clock, {"name": "a", "models": ["x"]}, {"name": "b"})
    balancer = Balancer([a, b], BalancerConfig())
    assert balancer.pick_local(RouteRequest("y")) is b
    assert balancer.pick_local(RouteRequest("x", exclude=frozenset({"b"}))) is a
    assert balancer.pick_local(RouteRequest("y", exclude=frozenset({"b"}))) is None


def test_user_affinity_sticks_while_healthy_then_moves(clock):
    ups = make(clock, {"name": "a"}, {"name": "b"}, {"name": "c"})
    balancer = Balancer(ups, BalancerConfig(affinity="user"))
    key = affinity_key(chat(user="alice"), BalancerConfig(affinity="user"))
    first = balancer.pick_local(RouteRequest("m", affinity_key=key))
    for _ in range(5):
        assert balancer.pick_local(RouteRequest("m", affinity_key=key)) is first
    first.circuit.record_failure(retry_after=60)
    moved = balancer.pick_local(RouteRequest("m", affinity_key=key))
    assert moved is not first
    assert balancer.pick_local(RouteRequest("m", affinity_key=key)) is moved


def test_prefix_affinity_key_needs_a_long_shared_prefix():
    config = BalancerConfig(affinity="prefix", affinity_min_prefix_chars=64)
    doc = "x" * 100
    one = affinity_key(
        {"messages": [{"role": "system", "content": doc}, {"role": "user", "content": "q1"}]},
        config,
    )
    two = affinity_key(
        {"messages": [{"role": "system", "content": doc}, {"role": "user", "content": "q2"}]},
        config,
    )
    assert one is not None and one == two
    assert affinity_key(chat("short"), config) is None
    assert affinity_key(chat("x" * 100), BalancerConfig()) is None  # affinity off by default


def test_affinity_index_is_bounded_lru():
    index = AffinityIndex(max_entries=3)
    for i in range(10):
        index.put(f"k{i}", "a")
    assert len(index) == 3
    index.get("k7")
    index.put("k10", "b")
    assert index.get("k7") == "a" and index.get("k8") is None


def test_upstream_without_continuation_is_not_used_to_continue(clock):
    a, b = make(clock, {"name": "a", "continuation": "none"}, {"name": "b"})
    balancer = Balancer([a, b], BalancerConfig())
    for _ in range(4):
        chosen = balancer.pick_local(RouteRequest("m", needs_continuation=True))
        assert chosen is b
        chosen.release()


def test_weights_hold_over_http(fake, gateway):
    a, b = fake("a"), fake("b")
    url = gateway(
        {
            "upstreams": [
                a.upstream(weight=2),
                b.upstream(weight=1),
                fake("spare").upstream(backup=True),
            ]
        }
    )
    with httpx.Client(timeout=10) as client:
        for _ in range(30):
            assert client.post(url + "/v1/chat/completions", json=chat()).status_code == 200
    assert (len(a.completions()), len(b.completions())) == (20, 10)
