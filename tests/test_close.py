"""Closing the pool: idle sessions now, lent ones on return, waiters told."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from smtppool import PoolClosed, SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import make_message


def test_close_quits_idle_sessions_and_refuses_new_checkouts(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """close() says QUIT to each idle session; later calls raise PoolClosed."""
    pool = pool_factory()
    with pool.connection() as a, pool.connection() as b:
        a.noop()
        b.noop()

    pool.close()
    pool.close()  # harmless the second time

    smtp_server.wait_for_sessions_closed()
    assert smtp_server.count("QUIT") == 2
    assert pool.stats().closed.pool_closed == 2
    with pytest.raises(PoolClosed, match="is closed"):
        pool.send_message(make_message())


def test_lent_session_is_closed_when_it_comes_back(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A session in use when the pool closes finishes its block, then is closed."""
    pool = pool_factory()
    msg = make_message()

    with pool.connection() as conn:
        pool.close()
        conn.send_message(msg)

    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    smtp_server.wait_for_sessions_closed()
    assert smtp_server.sessions[0].commands[-1] == "QUIT"
    assert pool.stats().size == 0


def test_waiters_get_pool_closed(pool_factory: Callable[..., SMTPPool]) -> None:
    """A checkout waiting for a session is woken with PoolClosed."""
    pool = pool_factory(max_size=1, acquire_timeout=30)
    raised: list[BaseException] = []
    waiting = threading.Event()

    def wait_for_session() -> None:
        waiting.set()
        try:
            with pool.connection():
                pass
        except PoolClosed as exc:
            raised.append(exc)

    with pool.connection():
        thread = threading.Thread(target=wait_for_session)
        thread.start()
        waiting.wait()
        while pool.stats().waiting == 0:
            thread.join(timeout=0.005)
        pool.close()
        thread.join(timeout=5)

    assert len(raised) == 1
    assert pool.stats().waiting == 0


def test_pool_is_a_context_manager(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Leaving the with block closes the pool."""
    with pool_factory() as pool:
        pool.send_message(make_message())

    smtp_server.wait_for_sessions_closed()
    assert smtp_server.count("QUIT") == 1
    with pytest.raises(PoolClosed):
        pool.send_message(make_message())
