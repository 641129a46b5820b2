"""The pool-wide rate limit, measured with the fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import FakeClock, make_message


@pytest.fixture
def limited(
    pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> Callable[[int, float], SMTPPool]:
    """Pools with a rate limit on the fake clock, whose sleeps move the clock."""

    def make(limit: int, period: float) -> SMTPPool:
        return pool_factory(
            rate_limit=limit, rate_period=period, clock=clock, sleep=clock.sleep
        )

    return make


def test_no_more_than_rate_limit_per_period(
    smtp_server: SMTPTestServer,
    limited: Callable[[int, float], SMTPPool],
    clock: FakeClock,
) -> None:
    """Three per second: seven messages start at 0, 0, 0, 1, 1, 1 and 2 s."""
    pool = limited(3, 1.0)
    start = clock.now
    started: list[float] = []

    for _ in range(7):
        pool.send_message(make_message())
        started.append(clock.now - start)

    assert started == [0, 0, 0, 1, 1, 1, 2]
    assert len(smtp_server.messages) == 7
    stats = pool.stats()
    assert (stats.rate_waits, stats.rate_wait_time) == (2, 2.0)


def test_time_already_passed_counts(
    smtp_server: SMTPTestServer,
    limited: Callable[[int, float], SMTPPool],
    clock: FakeClock,
) -> None:
    """A sender that comes back after part of the period waits only the rest."""
    pool = limited(2, 10.0)
    pool.send_message(make_message())
    clock.advance(4)
    pool.send_message(make_message())
    clock.advance(1)
    pool.send_message(make_message())

    assert clock.sleeps == [5.0]


def test_waiting_for_a_turn_holds_no_session(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """The wait happens before checkout, so the idle session stays in the pool."""
    in_use_while_waiting: list[int] = []
    pool: SMTPPool

    def sleep(seconds: float) -> None:
        in_use_while_waiting.append(pool.stats().in_use)
        clock.advance(seconds)

    pool = pool_factory(rate_limit=1, rate_period=5.0, clock=clock, sleep=sleep)
    pool.send_message(make_message())
    pool.send_message(make_message())

    assert in_use_while_waiting == [0]
    assert pool.stats().idle == 1


def test_sends_inside_a_block_are_counted(
    smtp_server: SMTPTestServer,
    limited: Callable[[int, float], SMTPPool],
    clock: FakeClock,
) -> None:
    """Messages sent through one lease share the same limit."""
    pool = limited(2, 1.0)
    with pool.connection() as conn:
        for _ in range(4):
            conn.send_message(make_message())
    pool.send_message(make_message())

    assert clock.sleeps == [1.0, 1.0]
    assert len(smtp_server.messages) == 5


def test_a_resend_does_not_take_another_turn(
    smtp_server: SMTPTestServer,
    limited: Callable[[int, float], SMTPPool],
    clock: FakeClock,
) -> None:
    """A message sent again after a lost session is still one message."""
    pool = limited(1, 1.0)
    smtp_server.on("MAIL", "421 4.3.2 closing", close=True, times=1)

    pool.send_message(make_message())

    assert clock.sleeps == []
    assert pool.stats().retries == 1
