"""Counters the pool keeps, and the frozen snapshot ``stats()`` returns."""

from __future__ import annotations

import enum

import attrs


class CloseReason(str, enum.Enum):
    """Why the pool closed a connection."""

    IDLE = "idle"
    LIFETIME = "lifetime"
    MESSAGES = "messages"
    BROKEN = "broken"
    VALIDATION_FAILED = "validation_failed"
    POOL_CLOSED = "pool_closed"
    # Let go of in a forked child, without a byte written: the parent's to close.
    FORKED = "forked"
    # Its borrower was garbage-collected without giving it back.
    LEAKED = "leaked"
    # Opened before drain() or set_credentials(): closed when next free.
    DRAINED = "drained"


@attrs.frozen
class ClosedCounts:
    """Connections closed so far, by reason."""

    idle: int = 0
    lifetime: int = 0
    messages: int = 0
    broken: int = 0
    validation_failed: int = 0
    pool_closed: int = 0
    forked: int = 0
    leaked: int = 0
    drained: int = 0

    @property
    def total(self) -> int:
        """All connections closed, whatever the reason."""
        return sum(attrs.astuple(self))


@attrs.frozen
class PoolStats:
    """A consistent snapshot of a pool's state and counters.

    ``size`` counts every connection the pool owns, including those being opened.
    ``wait_time`` is in seconds, summed over every checkout that had to wait, and
    ``rate_wait_time`` over every send that waited for its turn under
    ``rate_limit``. ``retries`` counts sends and connects tried again on a fresh
    session; ``delivery_unknown`` counts sends that raised ``DeliveryUnknown``.
    ``fork_resets`` counts the times the pool was emptied in a forked child; the
    other counters carry over from the parent into the child.
    """

    size: int
    idle: int
    in_use: int
    waiting: int
    created: int
    reused: int
    closed: ClosedCounts
    noops: int
    checkouts: int
    waits: int
    wait_time: float
    timeouts: int
    retries: int
    delivery_unknown: int
    rate_waits: int
    rate_wait_time: float
    fork_resets: int


@attrs.define
class Counters:
    """The mutable tallies behind `PoolStats`; guarded by the pool lock."""

    created: int = 0
    reused: int = 0
    noops: int = 0
    checkouts: int = 0
    waits: int = 0
    wait_time: float = 0.0
    timeouts: int = 0
    retries: int = 0
    delivery_unknown: int = 0
    rate_waits: int = 0
    rate_wait_time: float = 0.0
    fork_resets: int = 0
    closed: dict[CloseReason, int] = attrs.field(
        factory=lambda: dict.fromkeys(CloseReason, 0)
    )

    def closed_counts(self) -> ClosedCounts:
        return ClosedCounts(**{reason.value: n for reason, n in self.closed.items()})
