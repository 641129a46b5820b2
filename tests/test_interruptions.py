"""A signal that interrupts the pool mid-operation loses no session and no slot.

The interruption is real: SIGALRM from a timer, with a handler that raises, as
timeouts built on signals (and Ctrl-C) do.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import make_message


class Interrupted(BaseException):
    """Raised by the alarm handler, like KeyboardInterrupt."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float], None]]:
    """Raise Interrupted in the main thread after the given number of seconds."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_interrupted_waiter_leaves_the_line(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    alarm: Callable[[float], None],
) -> None:
    """A checkout interrupted while waiting does not swallow the next session."""
    pool = pool_factory(max_size=1, acquire_timeout=10)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pool.connection() as conn:
            conn.noop()
            holding.set()
            release.wait(timeout=10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=10)

    alarm(0.2)
    with pytest.raises(Interrupted):
        pool.connection().__enter__()
    assert pool.stats().waiting == 0

    release.set()
    holder.join(timeout=10)
    msg = make_message()
    pool.send_message(msg)
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert pool.stats().created == 1


def test_interrupted_rset_at_checkin_frees_the_slot(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    alarm: Callable[[float], None],
) -> None:
    """An interruption during the RSET that vets a session closes it and frees
    its slot, so the pool is not left short."""
    pool = pool_factory(max_size=1, acquire_timeout=2)
    smtp_server.on("RSET", delay=2, times=1)

    def fail_in_block() -> None:
        with pool.connection() as conn:
            conn.noop()
            alarm(0.2)
            raise RuntimeError("the block failed, so the pool sends RSET")

    with pytest.raises(Interrupted):
        fail_in_block()

    stats = pool.stats()
    assert (stats.size, stats.closed.broken) == (0, 1)
    pool.send_message(make_message())
    assert pool.stats().created == 2


def test_interrupted_quit_frees_the_slot(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    alarm: Callable[[float], None],
) -> None:
    """An interruption during QUIT of an expired session still frees the slot."""
    pool = pool_factory(max_size=1, max_messages=1, acquire_timeout=2)
    smtp_server.on("QUIT", delay=2, times=1)

    alarm(0.2)
    with pytest.raises(Interrupted):
        pool.send_message(make_message())  # the session is spent and QUIT hangs

    assert pool.stats().size == 0
    pool.send_message(make_message())
    assert len(smtp_server.messages) == 2


def test_interrupted_greeting_leaves_no_socket_open(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    alarm: Callable[[float], None],
) -> None:
    """An interruption while the greeting is awaited closes the new socket."""
    pool = pool_factory()
    smtp_server.on("CONNECT", delay=1.0, times=1)

    alarm(0.2)
    with pytest.raises(Interrupted):
        pool.send_message(make_message())

    assert pool.stats().size == 0
    # The server notices the close once it writes its delayed greeting.
    smtp_server.wait_for_sessions_closed(timeout=5)
