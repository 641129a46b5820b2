"""A session the server dropped while it sat idle is never handed to a caller.

Each way real servers drop idle sessions (field cases F01 and F02 in CASES.md, and
a TCP reset) is recovered from with every message delivered exactly once.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import FakeClock, make_message


@pytest.mark.parametrize("drop", ["silent", "421", "reset"])
def test_each_idle_drop_mode_is_recovered(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    drop: str,
) -> None:
    """After the server drops the idle session, the next send just works."""
    server = smtp_server_factory(idle_timeout=0.5, idle_drop=drop)
    pool = pool_factory(server, validate_after=60)
    messages = [make_message() for _ in range(3)]

    for msg in messages:
        pool.send_message(msg)
        server.wait_for_sessions_closed()

    assert [server.deliveries(m["Message-ID"]) for m in messages] == [1, 1, 1]
    stats = pool.stats()
    assert stats.created == 3
    assert stats.closed.validation_failed == 2
    # The liveness check found each dead session without a round trip.
    assert server.count("NOOP") == 0


def test_f01_silent_close_is_invisible_to_the_caller(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """F01: a session closed silently after idling is closed on our side too."""
    server = smtp_server_factory(idle_timeout=1.0, idle_drop="silent")
    pool = pool_factory(server)
    first, second = make_message("A"), make_message("B")

    with pool.connection() as conn:
        conn.send_message(first)
        client = conn.smtp
    server.wait_for_sessions_closed()

    pool.send_message(second)

    assert server.deliveries(first["Message-ID"]) == 1
    assert server.deliveries(second["Message-ID"]) == 1
    assert client.sock is None, "the dead socket was left open"
    assert pool.stats().idle == 1


def test_f02_pending_421_is_never_seen_as_a_refused_sender(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """F02: Postfix's idle 421 leads to one reconnect, not SMTPSenderRefused."""
    server = smtp_server_factory(idle_timeout=1.0, idle_drop="421")
    pool = pool_factory(server)
    first, second = make_message(), make_message()

    pool.send_message(first)
    server.wait_for_sessions_closed()
    refused = pool.send_message(second)

    assert refused == {}
    assert server.deliveries(second["Message-ID"]) == 1
    assert len(server.sessions) == 2
    assert pool.stats().created == 2


def test_the_shared_smtplib_pattern_fails_where_the_pool_does_not(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> None:
    """The failure this library exists for, shown with plain smtplib."""
    server = smtp_server_factory(idle_timeout=0.5, idle_drop="silent")
    client = smtplib.SMTP(server.host, server.port, "client.example.test", timeout=5)
    client.send_message(make_message())
    server.wait_for_sessions_closed()

    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.send_message(make_message())
    with pytest.raises(smtplib.SMTPServerDisconnected, match="please run connect"):
        client.send_message(make_message())


def test_noop_that_fails_replaces_the_session(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
) -> None:
    """A session that answers NOOP with 421 is closed and a new one is used."""
    pool = pool_factory(clock=clock, validate_after=1.0)
    pool.send_message(make_message())
    smtp_server.on("NOOP", "421 4.3.2 shutting down", close=True, times=1)
    clock.advance(5)

    msg = make_message()
    pool.send_message(msg)

    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    stats = pool.stats()
    assert (stats.created, stats.noops, stats.closed.validation_failed) == (2, 1, 1)
