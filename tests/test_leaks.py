"""Connections that are never given back: reclaimed, warned about, reported."""

from __future__ import annotations

import gc
import logging
import pickle
import re
import threading
from collections.abc import Callable, Iterator

import pytest

from smtppool import SMTPPool, SMTPPoolError
from smtppool.testing import SMTPTestServer

from .conftest import FakeClock, make_message


def borrow_and_drop(pool: SMTPPool) -> None:
    """Take a connection, use it, lose it without leaving its block, collect it."""
    conn = pool.connection().__enter__()
    conn.send_message(make_message())
    del conn
    gc.collect()


def test_a_dropped_connection_frees_its_slot_with_a_resource_warning(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """The leaked session is closed without a command and its slot reused."""
    pool = pool_factory(max_size=1, acquire_timeout=0.5)

    with pytest.warns(ResourceWarning, match="garbage-collected without being"):
        borrow_and_drop(pool)
    pool.send_message(make_message())

    stats = pool.stats()
    assert stats.closed.leaked == 1
    assert (stats.size, stats.idle) == (1, 1)
    smtp_server.wait_until(lambda: not smtp_server.sessions[0].is_open)
    assert smtp_server.sessions[0].commands[-1] == "DATA", "closed without QUIT"
    assert len(smtp_server.messages) == 2


def test_a_returned_connection_warns_nothing(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Leaving the block detaches the leak check."""
    pool = pool_factory()
    with pool.connection() as conn:
        conn.noop()
    del conn
    gc.collect()  # filterwarnings=error would turn a ResourceWarning into a failure

    assert pool.stats().closed.leaked == 0


def test_a_connection_is_only_usable_inside_its_block(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Before entering, after leaving, or entered twice: one clear error each."""
    pool = pool_factory()
    conn = pool.connection()
    with pytest.raises(
        SMTPPoolError, match=re.escape("inside 'with pool.connection()")
    ):
        conn.noop()
    with conn, pytest.raises(SMTPPoolError, match="entered only once"):
        conn.__enter__()
    with pytest.raises(SMTPPoolError, match="already returned"):
        conn.noop()
    assert repr(conn).endswith("returned>")


def test_leak_threshold_reports_the_borrower(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection held past leak_threshold is reported once, with the stack
    that took it, when the pool is next used."""
    caplog.set_level(logging.WARNING, logger="smtppool")
    pool = pool_factory(leak_threshold=30, clock=clock)

    def hold_too_long() -> None:
        with pool.connection() as conn:
            conn.noop()
            clock.advance(31)
            other = threading.Thread(target=lambda: pool.send_message(make_message()))
            other.start()
            other.join()
            pool.stats()

    hold_too_long()

    reports = [r for r in caplog.records if "lease.overdue" in r.getMessage()]
    assert len(reports) == 1
    assert "held=31.0s threshold=30.0s returned=no" in reports[0].getMessage()
    assert "in hold_too_long" in reports[0].getMessage()


def test_leak_threshold_reports_at_return_too(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With nobody else using the pool, the report comes when it is returned."""
    caplog.set_level(logging.WARNING, logger="smtppool")
    pool = pool_factory(leak_threshold=5, clock=clock)

    with pool.connection() as conn:
        conn.noop()
        clock.advance(6)

    (report,) = [r for r in caplog.records if "lease.overdue" in r.getMessage()]
    assert "returned=yes" in report.getMessage()
    assert report.levelno == logging.WARNING


def test_no_report_within_the_threshold(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Short loans are never reported."""
    caplog.set_level(logging.WARNING, logger="smtppool")
    pool = pool_factory(leak_threshold=5, clock=clock)
    for _ in range(3):
        with pool.connection() as conn:
            conn.noop()
            clock.advance(4)

    assert "lease.overdue" not in caplog.text


@pytest.fixture
def manual_gc() -> Iterator[None]:
    """Only explicit gc.collect() calls collect cycles during the test."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("manual_gc")
def test_a_leak_collected_while_another_thread_holds_the_lock_frees_the_slot(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """The collector waits its turn for the lock, then hands the slot to the
    thread waiting in line."""
    pool = pool_factory(max_size=1, acquire_timeout=10)
    conn = pool.connection().__enter__()
    conn.noop()
    cycle: list[object] = [conn]
    cycle.append(cycle)  # only the cycle collector will find it
    del conn, cycle

    waiter = threading.Thread(target=lambda: pool.send_message(make_message()))
    waiter.start()
    smtp_server.wait_until(lambda: pool.stats().waiting == 1)
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with pool._lock:
            holding.set()
            release.wait(timeout=10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait(timeout=10)

    def collect_in_another_thread() -> None:
        collector = threading.Thread(target=gc.collect)
        collector.start()
        release.set()
        collector.join(timeout=10)

    with pytest.warns(ResourceWarning):
        collect_in_another_thread()
    holder.join(timeout=10)
    waiter.join(timeout=10)

    assert len(smtp_server.messages) == 1
    assert pool.stats().closed.leaked == 1


def test_a_leak_found_while_this_thread_holds_the_lock_is_closed_later(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Queued, then closed by the next use of the pool, close() included."""
    pool = pool_factory()
    conn = pool.connection().__enter__()
    conn.noop()

    with pytest.warns(ResourceWarning), pool._lock:
        del conn  # the last reference: the finalizer runs here, under the lock
    pool.close()

    smtp_server.wait_for_sessions_closed()
    assert pool.stats().closed.leaked == 1


def test_a_connection_cannot_be_pickled(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Its session is a socket of this process."""
    pool = pool_factory()
    with pool.connection() as conn, pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(conn)
