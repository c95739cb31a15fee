"""Admission policy, as specifications: who starts, who waits, who is refused at once, and why."""

from __future__ import annotations

import math

import pytest

from localseek.server.admission import AdmissionQueue, DrainMeter, Ticket
from localseek.server.config import AdmissionConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_queue(slots=2, max_queue=4, max_queued_tokens=10_000, **kw):
    clock = FakeClock()
    config = AdmissionConfig(max_queue=max_queue, max_queued_tokens=max_queued_tokens, **kw)
    return AdmissionQueue(config, slots, clock), clock


def ticket(name, cost=100, priority=0, slots=1, deadline=math.inf):
    return Ticket(name, cost=cost, slots=slots, priority=priority, deadline=deadline)


def calibrate(queue, clock, rate=100.0):
    """Run and finish one ticket so the meter reads `rate` cost units per busy second."""
    t = ticket("warmup", cost=int(rate))
    assert queue.offer(t).started
    clock.advance(1.0)
    queue.release(t)
    assert queue.drain_rate() == pytest.approx(rate)


def test_starts_at_once_while_slots_are_free():
    queue, _ = make_queue(slots=2)
    assert queue.offer(ticket("a")).started
    assert queue.offer(ticket("b")).started
    third = queue.offer(ticket("c"))
    assert third.queued and not third.started
    assert [t.request_id for t in queue.waiting] == ["c"]


def test_waiting_tickets_start_in_priority_then_arrival_order():
    queue, _ = make_queue(slots=1, max_queue=10)
    running = ticket("running")
    queue.offer(running)
    for name, prio in [("low1", 5), ("high", -1), ("mid", 0), ("low2", 5)]:
        assert queue.offer(ticket(name, priority=prio)).queued
    order = []
    current = running
    while True:
        queue.release(current)
        started = queue.pop_startable()
        if not started:
            break
        assert len(started) == 1
        current = started[0]
        order.append(current.request_id)
    assert order == ["high", "mid", "low1", "low2"]


def test_a_new_request_does_not_jump_ahead_of_equal_priority_waiters():
    queue, _ = make_queue(slots=2, max_queue=10)
    big, r1 = ticket("big", slots=2), ticket("r1")
    queue.offer(r1)
    queue.offer(ticket("r2"))
    assert queue.offer(big).queued  # needs both slots
    queue.release(r1)  # one slot frees: big still cannot start
    assert queue.pop_startable() == []
    assert queue.offer(ticket("small")).queued  # and small does not overtake it


def test_full_queue_refuses_at_once_with_retry_after():
    queue, clock = make_queue(slots=1, max_queue=2)
    calibrate(queue, clock, rate=100.0)
    queue.offer(ticket("run", cost=100))
    queue.offer(ticket("w1", cost=100))
    queue.offer(ticket("w2", cost=100))
    decision = queue.offer(ticket("w3", cost=100))
    assert decision.refusal is not None
    assert decision.refusal.reason == "queue_full"
    # One waiting ticket must start to make room: 100 queued + half of 100 running, at 100/s.
    assert decision.refusal.retry_after == 2.0
    assert len(queue.waiting) == 2


def test_queued_token_bound_counts_expected_output():
    queue, _ = make_queue(slots=1, max_queue=100, max_queued_tokens=1000)
    queue.offer(ticket("run"))
    assert queue.offer(ticket("w1", cost=600)).queued
    decision = queue.offer(ticket("w2", cost=600))  # 1200 > 1000 tokens waiting
    assert decision.refusal is not None and decision.refusal.reason == "queue_tokens"
    assert "1000" in decision.refusal.message
    assert queue.offer(ticket("w3", cost=400)).queued  # exactly at the bound fits


def test_higher_priority_displaces_the_worst_waiting_ticket():
    queue, _ = make_queue(slots=1, max_queue=2)
    queue.offer(ticket("run", priority=9))
    queue.offer(ticket("low-old", priority=5))
    queue.offer(ticket("low-new", priority=5))
    decision = queue.offer(ticket("vip", priority=-1))
    assert decision.queued
    assert [(t.request_id, r.reason) for t, r in decision.displaced] == [("low-new", "displaced")]
    assert [t.request_id for t in queue.waiting] == ["vip", "low-old"]
    # The running ticket, though lowest priority of all, is never dropped.
    assert [t.request_id for t in queue.running] == ["run"]


def test_equal_priority_never_displaces():
    queue, _ = make_queue(slots=1, max_queue=1)
    queue.offer(ticket("run"))
    queue.offer(ticket("waiting", priority=3))
    decision = queue.offer(ticket("same", priority=3))
    assert decision.refusal is not None and decision.displaced == ()
    assert [t.request_id for t in queue.waiting] == ["waiting"]


def test_no_displacement_when_it_would_not_make_enough_room():
    queue, _ = make_queue(slots=1, max_queue=10, max_queued_tokens=1000)
    queue.offer(ticket("run"))
    queue.offer(ticket("high", cost=800, priority=0))
    queue.offer(ticket("low", cost=100, priority=5))
    decision = queue.offer(ticket("new", cost=500, priority=1))  # evicting low frees only 100
    assert decision.refusal is not None and decision.refusal.reason == "queue_tokens"
    assert decision.displaced == ()
    assert {t.request_id for t in queue.waiting} == {"high", "low"}


def test_refuses_at_once_when_the_wait_exceeds_the_deadline():
    queue, clock = make_queue(slots=1, max_queue=100)
    calibrate(queue, clock, rate=100.0)
    queue.offer(ticket("run", cost=200))
    for i in range(3):
        queue.offer(ticket(f"w{i}", cost=100))
    # Ahead: 300 queued + 100 (half the running work) = 400 units at 100/s = 4 s.
    assert queue.estimated_wait() == pytest.approx(4.0)
    late = queue.offer(ticket("hurry", deadline=clock.now + 1.5))
    assert late.refusal is not None and late.refusal.reason == "deadline"
    assert late.refusal.retry_after == 3.0  # ceil(4 - 1.5)
    assert queue.offer(ticket("patient", deadline=clock.now + 5.0)).queued


def test_high_priority_is_not_refused_for_lower_priority_work_ahead():
    queue, clock = make_queue(slots=1, max_queue=100)
    calibrate(queue, clock, rate=100.0)
    queue.offer(ticket("run", cost=100))
    for i in range(10):
        queue.offer(ticket(f"low{i}", cost=100, priority=5))
    assert queue.estimated_wait(priority=5) > 10
    assert queue.offer(ticket("vip", priority=0, deadline=clock.now + 1.0)).queued


def test_unknown_drain_rate_admits_within_the_bounds():
    queue, clock = make_queue(slots=1, max_queue=2)
    queue.offer(ticket("run"))
    assert queue.offer(ticket("w", deadline=clock.now + 0.001)).queued
    assert queue.offer(ticket("w2")).queued
    refusal = queue.offer(ticket("w3")).refusal
    assert refusal is not None and refusal.retry_after == 1.0  # the floor


def test_waiting_tickets_expire_after_their_deadline():
    queue, clock = make_queue(slots=1)
    queue.offer(ticket("run"))
    soon = ticket("soon", deadline=clock.now + 2)
    later = ticket("later", deadline=clock.now + 10)
    queue.offer(soon)
    queue.offer(later)
    clock.advance(3)
    expired = queue.expire()
    assert [(t.request_id, r.reason) for t, r in expired] == [("soon", "expired")]
    assert queue.waiting == [later]


def test_cancel_withdraws_a_waiting_ticket_only():
    queue, _ = make_queue(slots=1)
    running, waiting = ticket("run"), ticket("wait")
    queue.offer(running)
    queue.offer(waiting)
    assert queue.cancel(waiting) and queue.waiting == []
    assert not queue.cancel(running)


def test_slots_are_whole_after_every_path():
    queue, clock = make_queue(slots=3, max_queue=3)
    tickets = [ticket(f"t{i}", slots=1 + i % 2, priority=i % 3) for i in range(12)]
    for t in tickets:
        queue.offer(t)
        clock.advance(0.1)
    queue.expire()
    while queue.running:
        queue.release(next(iter(queue.running)))
        queue.pop_startable()
    for t in queue.waiting:
        queue.cancel(t)
    assert queue.free_slots == 3 and queue.snapshot().slots_used == 0


def test_n_larger_than_the_engine_is_clamped_not_stuck():
    queue, _ = make_queue(slots=2)
    decision = queue.offer(ticket("n8", slots=8))
    assert decision.started and queue.free_slots == 0


def test_drain_meter_counts_busy_time_only():
    clock = FakeClock()
    meter = DrainMeter(window=4, clock=clock)
    assert meter.rate() is None
    meter.set_busy(True)
    clock.advance(2)
    meter.record(100)
    meter.set_busy(False)
    clock.advance(100)  # idle: does not dilute the rate
    assert meter.rate() == pytest.approx(50.0)
    meter.set_busy(True)
    clock.advance(2)  # busy without completing: the rate falls
    assert meter.rate() == pytest.approx(25.0)


def test_certain_refusal_is_known_before_the_cost():
    queue, _ = make_queue(slots=1, max_queue=1)
    assert queue.certain_refusal(priority=0) is None  # a free slot
    assert queue.offer(ticket("running")).started
    assert queue.certain_refusal(priority=0) is None  # a free queue place
    assert queue.offer(ticket("waiting", priority=5)).queued
    assert queue.certain_refusal(priority=0) is None  # it could displace the priority-5 waiter
    refusal = queue.certain_refusal(priority=5)
    assert refusal is not None and refusal.reason == "queue_full"
    # And offer() agrees, whatever the cost.
    for cost in (1, 10**6):
        assert queue.offer(ticket("late", cost=cost, priority=5)).refusal.reason == "queue_full"
