"""Many threads, one pool: the size limit, fair waiting, timeouts, slow servers."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Callable

import pytest

from smtppool import ConnectionFailed, DeliveryUnknown, PoolTimeout, SMTPPool
from smtppool._session import forget_local_hostname
from smtppool.testing import SMTPTestServer

from .conftest import make_message


def run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    """Run ``target(i)`` in ``count`` threads; return what they raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition the pool exposes no event for; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


@pytest.mark.slow
def test_max_size_is_never_exceeded_by_32_threads(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """32 threads through max_size=4: at most 4 sessions, every message once."""
    pool = pool_factory(max_size=4)
    sent: list[str] = []

    def work(i: int) -> None:
        for _ in range(10):
            msg = make_message(f"thread {i}")
            pool.send_message(msg)
            sent.append(msg["Message-ID"])

    assert run_threads(32, work) == []

    assert smtp_server.peak_sessions <= 4
    assert len(sent) == 320
    assert all(smtp_server.deliveries(message_id) == 1 for message_id in sent)
    assert len(smtp_server.messages) == 320
    stats = pool.stats()
    assert stats.size <= 4
    assert stats.waits > 0
    assert stats.checkouts == 320


def test_pool_timeout_after_acquire_timeout(
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """A checkout that cannot be served raises PoolTimeout naming pool and wait."""
    pool = pool_factory(max_size=1, acquire_timeout=0.3, name="outbox")

    with pool.connection():
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match=r"pool 'outbox' after 0\.\d\d s"):
            pool.connection().__enter__()
        waited = time.monotonic() - started

    assert waited >= 0.3
    assert waited < 3.0
    stats = pool.stats()
    assert (stats.timeouts, stats.waits, stats.waiting) == (1, 1, 0)
    assert stats.wait_time >= 0.3


def test_pool_timeout_is_a_timeout_error() -> None:
    """Callers that catch TimeoutError catch PoolTimeout too."""
    assert issubclass(PoolTimeout, TimeoutError)


def test_waiters_are_served_first_come_first_served(
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """Queued checkouts get the returned session in the order they asked."""
    pool = pool_factory(max_size=1)
    order: list[int] = []

    def waiter(i: int) -> None:
        with pool.connection() as conn:
            order.append(i)
            conn.noop()

    threads = []
    with pool.connection():
        for i in range(4):
            thread = threading.Thread(target=waiter, args=(i,))
            thread.start()
            threads.append(thread)
            wait_for(lambda i=i: pool.stats().waiting == i + 1)
    for thread in threads:
        thread.join(timeout=10)

    assert order == [0, 1, 2, 3]


def test_a_hanging_connect_does_not_block_other_checkouts(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """While one thread waits on a silent server, others check in and out."""
    # retries=0: the stopped server would only refuse a second connect.
    pool = pool_factory(max_size=2, timeout=30, retries=0)
    smtp_server.on("CONNECT", hang=True, after=1)
    opened = threading.Event()
    outcome: list[BaseException] = []

    def open_second() -> None:
        opened.set()
        try:
            with pool.connection():  # the server never greets this session
                pass
        except OSError as exc:
            outcome.append(exc)

    with pool.connection() as conn:
        conn.noop()
        slow = threading.Thread(target=open_second, daemon=True)
        slow.start()
        opened.wait()
        smtp_server.wait_until(lambda: len(smtp_server.sessions) == 2)

    # The session above was checked in while the other thread hung in connect.
    msg = make_message()
    pool.send_message(msg)
    pool.send_message(make_message())

    assert slow.is_alive(), "the hanging connect finished early; test proves nothing"
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert pool.stats().size == 2
    smtp_server.stop()  # ends the session that was never greeted
    slow.join(timeout=10)
    assert isinstance(outcome[0], ConnectionFailed)
    assert isinstance(outcome[0].__cause__, smtplib.SMTPServerDisconnected)
    assert pool.stats().size == 1, "the failed connect kept its slot"


@pytest.fixture
def slow_fqdn(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make socket.getfqdn() slow, as on a host whose name does not resolve."""
    calls: list[float] = []

    def getfqdn(name: str = "") -> str:
        calls.append(time.monotonic())
        time.sleep(0.2)
        return "unresolvable-host"

    forget_local_hostname()
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    yield calls
    forget_local_hostname()


def test_f10_slow_hostname_lookup_happens_once(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    slow_fqdn: list[float],
) -> None:
    """F10: five new sessions cost one host-name lookup, not five."""
    pool = pool_factory(max_size=5, local_hostname=None)
    barrier = threading.Barrier(5)

    def hold(_: int) -> None:
        with pool.connection() as conn:
            barrier.wait(timeout=10)
            conn.noop()

    assert run_threads(5, hold) == []
    assert len(smtp_server.sessions) == 5
    assert len(slow_fqdn) == 1


def test_f10_no_lookup_with_local_hostname(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    slow_fqdn: list[float],
) -> None:
    """F10: with local_hostname set, the host name is never looked up."""
    pool = pool_factory(max_size=5, local_hostname="client.example.test")

    assert run_threads(5, lambda _: pool.send_message(make_message())) == []
    assert len(smtp_server.messages) == 5
    assert slow_fqdn == []


def test_a_send_waiting_on_the_server_holds_no_lock(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """While one thread waits for the reply to its final dot, others take
    sessions, send and read the stats: no lock is held across network I/O."""
    pool = pool_factory(max_size=2, timeout=30)
    smtp_server.on(".", hang=True, times=1)
    stuck = make_message()
    outcome: list[BaseException] = []

    def send_stuck() -> None:
        try:
            pool.send_message(stuck)
        except DeliveryUnknown as exc:
            outcome.append(exc)

    slow = threading.Thread(target=send_stuck, daemon=True)
    slow.start()
    smtp_server.wait_until(lambda: smtp_server.deliveries(stuck["Message-ID"]) == 1)

    msg = make_message()
    pool.send_message(msg)
    stats = pool.stats()

    assert slow.is_alive(), "the stuck send finished early; test proves nothing"
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert (stats.in_use, stats.idle) == (1, 1)
    smtp_server.stop()  # the stuck send now hears nothing more: unknown
    slow.join(timeout=10)
    assert isinstance(outcome[0], DeliveryUnknown)
