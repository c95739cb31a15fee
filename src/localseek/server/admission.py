"""Server admission policy: a bounded priority queue that refuses early, not after waiting.

A pure policy object (no asyncio, no torch, an injected clock) so its rules are tested as
specifications; `gate.py` wires it to asyncio and the engine.

Units: a ticket's `cost` is its prompt tokens plus the output tokens it may produce, times n.
The drain rate is measured in the same declared units (cost completed per busy second), so an
estimate stays calibrated even though most requests stop before their max_tokens.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from localseek.server.config import AdmissionConfig

# Why a request was refused; the `reason` label of the refusal metric (a bounded set).
REFUSAL_REASONS = ("queue_full", "queue_tokens", "deadline", "displaced", "expired")

_order = itertools.count()


@dataclass(eq=False)
class Ticket:
    """One client request as admission sees it (identity-compared)."""

    request_id: str
    cost: int  # prompt + expected output tokens, summed over its n sequences
    slots: int = 1  # engine sequences it runs at once (n)
    priority: int = 0  # lower is served first
    deadline: float = math.inf  # clock time by which it must have started
    arrival: float = 0.0  # set by offer()
    order: int = field(default_factory=lambda: next(_order))

    @property
    def key(self) -> tuple[int, int]:
        return (self.priority, self.order)


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of REFUSAL_REASONS
    retry_after: float  # seconds after which a retry is likely to be admitted
    message: str


@dataclass(frozen=True)
class Decision:
    """What offer() did: started, queued (neither set), or refused; and whom it displaced."""

    started: bool = False
    refusal: Refusal | None = None
    displaced: tuple[tuple[Ticket, Refusal], ...] = ()

    @property
    def queued(self) -> bool:
        return not self.started and self.refusal is None


class DrainMeter:
    """Cost completed per second of busy time, over the last `window` completions.

    Only busy time counts (some ticket running), so an idle minute does not read as a slow
    server; time since the last completion does count, so a stalled engine reads as slow.
    """

    def __init__(self, window: int, clock: Callable[[], float]):
        self._clock = clock
        # (busy seconds so far at the completion, cost completed); the first entry is the origin.
        self._marks: deque[tuple[float, float]] = deque([(0.0, 0.0)], maxlen=window + 1)
        self._busy_total = 0.0
        self._busy_since: float | None = None

    def set_busy(self, busy: bool) -> None:
        now = self._clock()
        if busy and self._busy_since is None:
            self._busy_since = now
        elif not busy and self._busy_since is not None:
            self._busy_total += now - self._busy_since
            self._busy_since = None

    def busy_seconds(self) -> float:
        running = 0.0 if self._busy_since is None else self._clock() - self._busy_since
        return self._busy_total + running

    def record(self, cost: float) -> None:
        self._marks.append((self.busy_seconds(), float(cost)))

    def rate(self) -> float | None:
        """Cost units per second, or None before the first completion."""
        if len(self._marks) < 2:
            return None
        elapsed = self.busy_seconds() - self._marks[0][0]
        done = sum(cost for _, cost in itertools.islice(self._marks, 1, None))
        if elapsed <= 0 or done <= 0:
            return None
        return done / elapsed


@dataclass(frozen=True)
class AdmissionSnapshot:
    running: int  # tickets started and not released
    slots_used: int
    total_slots: int
    waiting: int
    queued_tokens: int
    drain_rate: float | None  # cost units per second
    estimated_wait_s: float  # for a new priority-0, single-sequence request


class AdmissionQueue:
    """Who starts now, who waits, who is refused at once, and who is displaced.

    - A ticket starts at once when its slots are free and nothing of its priority or better
      waits. Otherwise it queues, unless its estimated wait exceeds its deadline (refused now,
      reason "deadline"), or the queue is full by count or tokens even after displacing
      strictly lower-priority waiting tickets (reason "queue_full" / "queue_tokens").
    - Running tickets are never dropped; only waiting ones are displaced or expire.
    - Retry-After is the time, at the measured drain rate, until the refusing condition
      would clear.
    """

    def __init__(self, config: AdmissionConfig, total_slots: int, clock: Callable[[], float]):
        if total_slots < 1:
            raise ValueError(f"total_slots must be >= 1, got {total_slots}")
        self.config = config
        self.total_slots = total_slots
        self._clock = clock
        self._meter = DrainMeter(config.drain_window, clock)
        self._waiting: list[Ticket] = []  # kept sorted by Ticket.key
        self._running: set[Ticket] = set()
        self._slots_used = 0

    # ---- views ----------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    @property
    def waiting(self) -> list[Ticket]:
        return list(self._waiting)

    @property
    def running(self) -> set[Ticket]:
        return set(self._running)

    @property
    def free_slots(self) -> int:
        return self.total_slots - self._slots_used

    @property
    def queued_tokens(self) -> int:
        return sum(t.cost for t in self._waiting)

    def drain_rate(self) -> float | None:
        return self._meter.rate()

    def estimated_wait(self, priority: int = 0, slots: int = 1) -> float:
        """Seconds a new ticket of this priority would wait to start (0 when unknown)."""
        ahead = [t for t in self._waiting if t.priority <= priority]
        if not ahead and self.free_slots >= min(slots, self.total_slots):
            return 0.0
        return self._seconds_for(sum(t.cost for t in ahead))

    def snapshot(self) -> AdmissionSnapshot:
        return AdmissionSnapshot(
            running=len(self._running),
            slots_used=self._slots_used,
            total_slots=self.total_slots,
            waiting=len(self._waiting),
            queued_tokens=self.queued_tokens,
            drain_rate=self.drain_rate(),
            estimated_wait_s=self.estimated_wait(),
        )

    # ---- transitions ----------------------------------------------------------------------

    def offer(self, ticket: Ticket) -> Decision:
        """Start, queue or refuse a new ticket (see the class docstring)."""
        now = self._clock()
        ticket.arrival = now
        ticket.slots = max(1, min(ticket.slots, self.total_slots))  # never wait for the impossible
        if self._can_start_now(ticket):
            self._start(ticket)
            return Decision(started=True)
        wait = self.estimated_wait(ticket.priority, ticket.slots)
        budget = ticket.deadline - now
        if wait > budget:
            return Decision(
                refusal=self._refusal(
                    "deadline",
                    wait - budget,
                    f"estimated wait {wait:.1f}s exceeds the request timeout {max(budget, 0):.1f}s",
                )
            )
        victims, refusal = self._make_room(ticket)
        if refusal is not None:
            return Decision(refusal=refusal)
        for victim in victims:
            self._waiting.remove(victim)
        self._insert(ticket)
        displaced = tuple(
            (
                v,
                self._refusal(
                    "displaced",
                    self.estimated_wait(v.priority, v.slots),
                    f"displaced from the queue by higher-priority work (priority {ticket.priority} "
                    f"< {v.priority})",
                ),
            )
            for v in victims
        )
        return Decision(displaced=displaced)

    def certain_refusal(self, priority: int, slots: int = 1) -> Refusal | None:
        """The refusal offer() would give a request of this priority whatever its cost, or None.

        Known before the request is rendered and tokenized (its cost is not): it cannot start
        now, the queue is full by count, and nobody waiting has a lower priority to displace.
        """
        slots = max(1, min(slots, self.total_slots))
        ahead = any(t.priority <= priority for t in self._waiting)
        if not ahead and slots <= self.free_slots:
            return None
        if len(self._waiting) < self.config.max_queue:
            return None
        if any(t.priority > priority for t in self._waiting):
            return None
        return self._refusal(
            "queue_full",
            self._seconds_for(self._head_cost(count=1)),
            f"the queue is full ({len(self._waiting)} of {self.config.max_queue} requests waiting)",
        )

    def pop_startable(self) -> list[Ticket]:
        """Start waiting tickets, best first, while the head's slots are free.

        Strict head-of-line: a ticket needing n slots is not overtaken by smaller ones of
        equal or lower priority, so n > 1 requests are not starved.
        """
        started = []
        while self._waiting and self._waiting[0].slots <= self.free_slots:
            ticket = self._waiting.pop(0)
            self._start(ticket)
            started.append(ticket)
        return started

    def release(self, ticket: Ticket, cost_done: float | None = None) -> None:
        """A started ticket finished (or was cut short after `cost_done` units of work)."""
        if ticket not in self._running:
            return
        self._running.discard(ticket)
        self._slots_used -= ticket.slots
        self._meter.record(ticket.cost if cost_done is None else cost_done)
        self._meter.set_busy(self._slots_used > 0)

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a waiting ticket (its client left); False if it was not waiting."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            return True
        return False

    def expire(self) -> list[tuple[Ticket, Refusal]]:
        """Remove waiting tickets whose deadline has passed (the estimate was too hopeful)."""
        now = self._clock()
        late = [t for t in self._waiting if t.deadline < now]
        out = []
        for ticket in late:
            self._waiting.remove(ticket)
            out.append(
                (
                    ticket,
                    self._refusal(
                        "expired",
                        self.estimated_wait(ticket.priority, ticket.slots),
                        f"request did not start within its timeout ({ticket.deadline - ticket.arrival:.1f}s)",
                    ),
                )
            )
        return out

    # ---- internals ------------------------------------------------------------------------

    def _can_start_now(self, ticket: Ticket) -> bool:
        ahead = any(t.priority <= ticket.priority for t in self._waiting)
        return not ahead and ticket.slots <= self.free_slots

    def _start(self, ticket: Ticket) -> None:
        self._running.add(ticket)
        self._slots_used += ticket.slots
        self._meter.set_busy(True)

    def _insert(self, ticket: Ticket) -> None:
        index = next(
            (i for i, t in enumerate(self._waiting) if t.key > ticket.key), len(self._waiting)
        )
        self._waiting.insert(index, ticket)

    def _make_room(self, ticket: Ticket) -> tuple[list[Ticket], Refusal | None]:
        """Lower-priority waiting tickets to displace so `ticket` fits, or why it cannot."""
        excess_count = len(self._waiting) + 1 - self.config.max_queue
        excess_tokens = self.queued_tokens + ticket.cost - self.config.max_queued_tokens
        victims: list[Ticket] = []
        # Worst first: the lowest priority, then the latest arrival.
        for candidate in sorted(self._waiting, key=lambda t: t.key, reverse=True):
            if excess_count <= 0 and excess_tokens <= 0:
                break
            if candidate.priority <= ticket.priority:
                break
            victims.append(candidate)
            excess_count -= 1
            excess_tokens -= candidate.cost
        if excess_count <= 0 and excess_tokens <= 0:
            return victims, None
        if excess_count > 0:
            return [], self._refusal(
                "queue_full",
                self._seconds_for(self._head_cost(count=excess_count)),
                f"the queue is full ({len(self._waiting)} of {self.config.max_queue} requests "
                "waiting)",
            )
        return [], self._refusal(
            "queue_tokens",
            self._seconds_for(self._head_cost(tokens=excess_tokens)),
            f"the queue is full ({self.queued_tokens} of {self.config.max_queued_tokens} tokens "
            f"waiting; this request needs {ticket.cost})",
        )

    def _head_cost(self, *, count: int = 0, tokens: int = 0) -> int:
        # Work that must leave the queue (in order) before `count` places / `tokens` free up.
        done = 0
        for i, t in enumerate(self._waiting):
            if i >= count and done >= tokens:
                break
            done += t.cost
        return max(done, tokens)

    def _seconds_for(self, queued_cost: float) -> float:
        """Time to drain `queued_cost` plus, on average, half the running work (a slot frees)."""
        rate = self._meter.rate()
        if rate is None:
            return 0.0  # nothing measured yet: the queue bounds alone protect the server
        running = sum(t.cost for t in self._running)
        if not self._running and not queued_cost:
            return 0.0
        return (queued_cost + running / 2) / rate

    def _refusal(self, reason: str, seconds: float, message: str) -> Refusal:
        retry_after = max(self.config.min_retry_after, math.ceil(seconds))
        return Refusal(reason, float(retry_after), message)
