"""Circuit breaker: opens on failures or Retry-After, half-open trial, backoff doubling."""

from __future__ import annotations

from localseek.gateway.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from localseek.gateway.config import HealthConfig


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **fields) -> CircuitBreaker:
    return CircuitBreaker(
        HealthConfig(failure_threshold=2, backoff_initial_s=1, backoff_max_s=4, **fields), clock
    )


def test_opens_after_threshold_and_half_open_lets_one_trial():
    clock = Clock()
    cb = breaker(clock)
    cb.record_failure()
    assert cb.state == CLOSED
    cb.record_failure()
    assert cb.state == OPEN and not cb.allows()
    clock.now = 1.0
    assert cb.state == HALF_OPEN and cb.allows()
    cb.on_send()
    assert not cb.allows()  # one trial at a time
    cb.record_success()
    assert cb.state == CLOSED and cb.allows()


def test_failed_trial_reopens_with_doubled_backoff_capped():
    clock = Clock()
    cb = breaker(clock)
    cb.record_failure()
    cb.record_failure()  # open 1 s
    periods = []
    for _ in range(4):
        clock.now = cb.open_until
        cb.on_send()
        cb.record_failure()
        periods.append(cb.open_until - clock.now)
    assert periods == [2, 4, 4, 4]


def test_retry_after_opens_at_once_for_that_long():
    clock = Clock()
    cb = breaker(clock)
    cb.record_failure(retry_after=12)
    assert cb.state == OPEN
    clock.now = 11.9
    cb.probe_succeeded()  # a healthy /health does not override the upstream's Retry-After
    assert cb.state == OPEN
    clock.now = 12
    cb.probe_succeeded()
    assert cb.state == CLOSED
