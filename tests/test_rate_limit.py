"""The pool-wide rate limit, measured with the fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import FakeClock, make_message


@pytest.fixture
def sleeps() -> list[float]:
    """The delays the pool slept for."""
    return []


def sleeper(clock: FakeClock, sleeps: list[float]) -> Callable[[float], None]:
    """A sleep that records the delay and moves the fake clock by it."""

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    return sleep


def test_no_more_than_rate_limit_per_period(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    sleeps: list[float],
) -> None:
    """Three per second: seven messages start at 0, 0, 0, 1, 1, 1 and 2 s."""
    pool = pool_factory(
        rate_limit=3, rate_period=1.0, clock=clock, sleep=sleeper(clock, sleeps)
    )
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
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    sleeps: list[float],
) -> None:
    """A sender that comes back after part of the period waits only the rest."""
    pool = pool_factory(
        rate_limit=2, rate_period=10.0, clock=clock, sleep=sleeper(clock, sleeps)
    )
    pool.send_message(make_message())
    clock.advance(4)
    pool.send_message(make_message())
    clock.advance(1)
    pool.send_message(make_message())

    assert sleeps == [5.0]


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
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    sleeps: list[float],
) -> None:
    """Messages sent through one lease share the same limit."""
    pool = pool_factory(
        rate_limit=2, rate_period=1.0, clock=clock, sleep=sleeper(clock, sleeps)
    )
    with pool.connection() as conn:
        for _ in range(4):
            conn.send_message(make_message())
    pool.send_message(make_message())

    assert sleeps == [1.0, 1.0]
    assert len(smtp_server.messages) == 5


def test_a_resend_does_not_take_another_turn(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    sleeps: list[float],
) -> None:
    """A message sent again after a lost session is still one message."""
    pool = pool_factory(
        rate_limit=1, rate_period=1.0, clock=clock, sleep=sleeper(clock, sleeps)
    )
    smtp_server.on("MAIL", "421 4.3.2 closing", close=True, times=1)

    pool.send_message(make_message())

    assert sleeps == []
    assert pool.stats().retries == 1
