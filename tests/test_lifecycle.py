"""Reuse, expiry and validation of sessions, driven by an injected clock."""

from __future__ import annotations

import logging
import random
import smtplib
from collections.abc import Callable

import pytest

from smtppool import SMTPPool, SMTPPoolError
from smtppool.testing import SMTPTestServer

from .conftest import FakeClock, make_message


def session_of(server: SMTPTestServer, msg: object) -> int:
    """The server-side session that delivered the message with this Message-ID."""
    message_id = msg["Message-ID"]  # type: ignore[index]
    (session_id,) = [
        m.session_id for m in server.messages if m.message_id == message_id
    ]
    return session_id


def test_sessions_are_reused(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Ten sends one after another share one session."""
    pool = pool_factory()
    for _ in range(10):
        pool.send_message(make_message())

    assert len(smtp_server.sessions) == 1
    assert len(smtp_server.messages) == 10
    stats = pool.stats()
    assert (stats.created, stats.reused, stats.checkouts) == (1, 9, 10)


def test_newest_idle_session_is_reused_first(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Idle sessions are a stack: the one returned last goes out first."""
    pool = pool_factory()
    first, second = make_message(), make_message()
    with pool.connection() as a, pool.connection() as b:
        a.send_message(first)
        b.send_message(second)
    # b's block ended first, so a was returned last.

    latest = make_message()
    pool.send_message(latest)

    assert session_of(smtp_server, latest) == session_of(smtp_server, first)
    assert session_of(smtp_server, latest) != session_of(smtp_server, second)


def test_no_noop_within_validate_after(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """A session used moments ago goes out without a round trip."""
    pool = pool_factory(clock=clock, validate_after=1.0)
    for _ in range(5):
        pool.send_message(make_message())
        clock.advance(0.9)

    assert smtp_server.count("NOOP") == 0
    assert pool.stats().noops == 0


def test_a_warm_send_is_three_commands_in_two_writes_and_no_log_line(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hot path: MAIL, RCPT and DATA pipelined, then the body; no NOOP, no
    RSET, and nothing logged even at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="smtppool")
    pool = pool_factory()
    pool.send_message(make_message())
    caplog.clear()
    before = smtp_server.sessions[0].commands

    for _ in range(5):
        pool.send_message(make_message())

    (session,) = smtp_server.sessions
    assert session.commands[len(before) :] == ("MAIL", "RCPT", "DATA") * 5
    assert session.pipelined == 2 * 6
    assert caplog.records == []


def test_noop_after_validate_after(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """A session idle longer than validate_after is checked with one NOOP."""
    pool = pool_factory(clock=clock, validate_after=1.0)
    pool.send_message(make_message())
    clock.advance(1.5)
    pool.send_message(make_message())

    assert smtp_server.count("NOOP") == 1
    assert smtp_server.sessions[0].commands.index("NOOP") < len(
        smtp_server.sessions[0].commands
    )
    assert pool.stats().noops == 1
    assert len(smtp_server.sessions) == 1


def test_idle_expiry(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """A session idle past max_idle is closed with QUIT and replaced."""
    pool = pool_factory(clock=clock, max_idle=10)
    pool.send_message(make_message())
    clock.advance(10.5)
    pool.send_message(make_message())

    assert pool.stats().closed.idle == 1
    assert len(smtp_server.sessions) == 2
    smtp_server.wait_until(lambda: not smtp_server.sessions[0].is_open)
    assert smtp_server.sessions[0].commands[-1] == "QUIT"


def test_lifetime_expiry(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """A session past max_lifetime is replaced, even if used all along."""
    pool = pool_factory(clock=clock, max_lifetime=100, validate_after=1000)
    for _ in range(12):
        pool.send_message(make_message())
        clock.advance(10)

    assert pool.stats().closed.lifetime == 1
    assert len(smtp_server.sessions) == 2
    assert len(smtp_server.messages) == 12


def test_message_limit(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A session that sent max_messages is replaced before it sends more."""
    pool = pool_factory(max_messages=3)
    for _ in range(7):
        pool.send_message(make_message())

    per_session = [
        sum(m.session_id == s.id for m in smtp_server.messages)
        for s in smtp_server.sessions
    ]
    assert per_session == [3, 3, 1]
    assert pool.stats().closed.messages == 2


def test_lifetime_jitter_stays_within_ten_percent(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """Each session lives between 90 % and 100 % of max_lifetime, varying."""
    random.seed(20261203)
    survived_95 = []
    for _ in range(20):
        pool = pool_factory(clock=clock, max_lifetime=100, max_idle=None)
        start = clock.now
        pool.send_message(make_message())

        clock.now = start + 89.9
        pool.send_message(make_message())
        assert pool.stats().created == 1, "expired before 90 % of its lifetime"

        clock.now = start + 95
        pool.send_message(make_message())
        survived_95.append(pool.stats().created == 1)

        clock.now = start + 100
        pool.send_message(make_message())
        assert pool.stats().closed.lifetime == 1, "outlived max_lifetime"
        pool.close()

    assert any(survived_95)
    assert not all(survived_95)


def test_prune_closes_expired_idle_sessions(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool], clock: FakeClock
) -> None:
    """prune() closes idle sessions past their limits without a checkout."""
    pool = pool_factory(clock=clock, max_idle=10)
    with pool.connection() as a, pool.connection() as b:
        a.noop()
        b.noop()
    clock.advance(11)

    pool.prune()

    stats = pool.stats()
    assert (stats.size, stats.idle, stats.closed.idle) == (0, 0, 2)
    smtp_server.wait_for_sessions_closed()
    assert smtp_server.count("QUIT") == 2


def test_prune_closes_sessions_the_server_dropped(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """prune() also drops idle sessions whose server hung up."""
    server = smtp_server_factory(idle_timeout=0.3, idle_drop="421")
    pool = pool_factory(server)
    pool.send_message(make_message())
    server.wait_for_sessions_closed()

    pool.prune()

    stats = pool.stats()
    assert (stats.size, stats.closed.validation_failed) == (0, 1)


def test_connection_is_unusable_after_its_block(
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """Using a connection after the with block raises SMTPPoolError."""
    pool = pool_factory()
    with pool.connection() as conn:
        conn.noop()

    with pytest.raises(SMTPPoolError, match="already returned to pool"):
        conn.send_message(make_message())
    with pytest.raises(SMTPPoolError):
        _ = conn.smtp


def test_connection_methods_keep_smtplib_semantics(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """sendmail, send_message and noop return what smtplib returns."""
    pool = pool_factory()
    smtp_server.on("RCPT", "550 5.1.1 no such user", after=1, times=1)
    msg = make_message()

    with pool.connection() as conn:
        assert conn.noop()[0] == 250
        refused = conn.sendmail(
            "a@example.test",
            ["b@example.test", "nobody@example.test"],
            msg.as_bytes(),
        )
        assert refused == {"nobody@example.test": (550, b"5.1.1 no such user")}
        assert conn.send_message(make_message()) == {}

    assert len(smtp_server.messages) == 2


def test_pool_sendmail(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """pool.sendmail sends raw text on a pooled session."""
    pool = pool_factory()
    msg = make_message()

    assert pool.sendmail("a@example.test", "b@example.test", msg.as_string()) == {}

    (received,) = smtp_server.messages
    assert received.rcpt_tos == ("b@example.test",)
    assert received.message_id == msg["Message-ID"]


def test_refused_transaction_is_reset_before_reuse(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """After every recipient is refused, the session is RSET and reused."""
    pool = pool_factory()
    smtp_server.on("RCPT", "550 5.1.1 no such user", times=1)

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        pool.send_message(make_message())
    msg = make_message()
    pool.send_message(msg)

    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert len(smtp_server.sessions) == 1
    commands = smtp_server.sessions[0].commands
    assert commands.count("MAIL") == 2
    assert commands.count("RSET") >= 1


def test_failed_block_keeps_session_when_rset_succeeds(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """An exception in the block costs one RSET; the session stays pooled."""
    pool = pool_factory()

    def fail_after_sending() -> None:
        with pool.connection() as conn:
            conn.send_message(make_message())
            raise RuntimeError("the caller's own bug")

    with pytest.raises(RuntimeError):
        fail_after_sending()

    pool.send_message(make_message())
    assert smtp_server.count("RSET") == 1
    assert len(smtp_server.sessions) == 1


def test_failed_block_closes_session_when_rset_fails(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A session that does not answer RSET with 250 is not reused."""
    pool = pool_factory()
    smtp_server.on("RSET", "500 confused", times=1)

    def fail_in_block() -> None:
        with pool.connection() as conn:
            conn.noop()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_in_block()

    pool.send_message(make_message())
    assert len(smtp_server.sessions) == 2
    assert pool.stats().closed.broken == 1


def test_session_that_died_in_a_block_is_not_reused(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A disconnect inside the block closes that session for good."""
    pool = pool_factory()
    smtp_server.on("NOOP", drop=True, times=1)

    with pytest.raises(smtplib.SMTPServerDisconnected), pool.connection() as conn:
        conn.noop()

    msg = make_message()
    pool.send_message(msg)
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert len(smtp_server.sessions) == 2
    stats = pool.stats()
    assert (stats.created, stats.closed.broken) == (2, 1)
    # Nothing was sent on the dead session after the disconnect.
    assert smtp_server.sessions[0].commands[-1] == "NOOP"


def test_421_to_data_closes_the_session_smtplib_left_open(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A 421 to DATA ends the session although smtplib leaves its socket open."""
    pool = pool_factory()
    smtp_server.on("DATA", "421 4.3.0 try later", times=1)
    msg = make_message()

    pool.send_message(msg)

    smtp_server.wait_until(lambda: not smtp_server.sessions[0].is_open)
    assert smtp_server.sessions[0].commands[-1] == "DATA"
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert pool.stats().closed.broken == 1
