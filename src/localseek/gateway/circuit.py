"""Per-upstream circuit breaker: closed, open with exponential backoff, half-open probe."""

from __future__ import annotations

from collections.abc import Callable

from localseek.gateway.config import HealthConfig

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the circuit-state gauge's encoding


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures (or at once on a Retry-After).

    While open, no request is sent. When the open period ends one trial request (or an active
    probe) is let through; its success closes the circuit, its failure reopens it with the
    period doubled, up to backoff_max_s.
    """

    def __init__(self, config: HealthConfig, clock: Callable[[], float]):
        self._config = config
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._opened = False
        self._trial_in_flight = False
        self._backoff = config.backoff_initial_s

    @property
    def state(self) -> str:
        if not self._opened:
            return CLOSED
        return OPEN if self._clock() < self._open_until else HALF_OPEN

    @property
    def open_until(self) -> float:
        return self._open_until if self._opened else 0.0

    def allows(self) -> bool:
        """Whether a request may be sent now (at most one trial while half-open)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self._trial_in_flight)

    def on_send(self) -> None:
        if self.state == HALF_OPEN:
            self._trial_in_flight = True

    def cancel_trial(self) -> None:
        """The trial request ended without a verdict (its client went away): allow another."""
        self._trial_in_flight = False

    def record_success(self) -> None:
        self._failures = 0
        self._opened = False
        self._trial_in_flight = False
        self._backoff = self._config.backoff_initial_s

    def record_failure(self, retry_after: float | None = None) -> None:
        """A connect error, timeout, 5xx or 429; a Retry-After opens the circuit for that long."""
        self._failures += 1
        half_open = self.state == HALF_OPEN
        if retry_after is not None or half_open or self._failures >= self._config.failure_threshold:
            self._open(retry_after)

    def probe_succeeded(self) -> None:
        """An active probe answered; it closes the circuit only once the open period is over."""
        if self.state != OPEN:
            self.record_success()

    def _open(self, retry_after: float | None) -> None:
        period = self._backoff if retry_after is None else max(retry_after, 0.0)
        self._open_until = max(self._open_until, self._clock() + period)
        self._opened = True
        self._trial_in_flight = False
        if retry_after is None:
            self._backoff = min(self._backoff * 2, self._config.backoff_max_s)
