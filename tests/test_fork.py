"""Real forks: a pool warmed in the parent never shares a session with a child.

Each child runs a function and reports its result through a pipe; the server's
record of each session shows whether a child ever wrote to the parent's session.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from smtppool import SMTPPool, SMTPPoolError, _session, _smtp
from smtppool.testing import SMTPTestServer

from .conftest import in_child, make_message

# The test server runs in a thread of this process, which Python 3.12 and later
# warn about at every fork; the children here only ever use sockets.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def send_and_report(pool: SMTPPool) -> Callable[[], dict[str, Any]]:
    """Work for a child: send one message, report its Message-ID and the stats."""

    def work() -> dict[str, Any]:
        msg = make_message("from the child")
        pool.send_message(msg)
        stats = pool.stats()
        return {
            "message_id": msg["Message-ID"],
            "fork_resets": stats.fork_resets,
            "forked": stats.closed.forked,
            "created": stats.created,
        }

    return work


@pytest.fixture
def server_and_pool(
    request: pytest.FixtureRequest,
    smtp_server: SMTPTestServer,
    tls_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> tuple[SMTPTestServer, SMTPPool]:
    """A server and a pool for it, plain or STARTTLS as the test is parametrized."""
    security = request.param
    server = tls_server if security == "starttls" else smtp_server
    return server, pool_factory(server, security=security, ssl_context=client_context)


@pytest.fixture
def tls_server(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
) -> SMTPTestServer:
    return smtp_server_factory(tls_context=server_context)


@pytest.mark.parametrize("server_and_pool", ["none", "starttls"], indirect=True)
def test_parent_and_child_each_use_their_own_sessions(
    server_and_pool: tuple[SMTPTestServer, SMTPPool],
) -> None:
    """F12: warm, fork, send from both; the child writes nothing to the parent's
    session, and the parent's session keeps working after the child exits."""
    server, pool = server_and_pool
    first = make_message()
    pool.send_message(first)
    before = server.sessions[0].bytes_received

    child = in_child(send_and_report(pool))

    assert server.sessions[0].bytes_received == before, "the child wrote to it"
    later = make_message()
    pool.send_message(later)

    assert server.deliveries(child["message_id"]) == 1
    assert (child["fork_resets"], child["forked"]) == (1, 1)
    parent_session = server.sessions[0].id
    ids = {m.message_id: m.session_id for m in server.messages}
    assert ids[first["Message-ID"]] == ids[later["Message-ID"]] == parent_session
    assert ids[child["message_id"]] != parent_session
    assert server.sessions[0].is_open
    assert pool.stats().fork_resets == 0


def test_multiprocessing_fork_start_method(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A multiprocessing child started with 'fork' sends on a session of its own."""
    pool = pool_factory()
    pool.send_message(make_message())
    before = smtp_server.sessions[0].bytes_received

    process = multiprocessing.get_context("fork").Process(
        target=pool.send_message, args=(make_message("from multiprocessing"),)
    )
    process.start()
    process.join(timeout=30)

    assert process.exitcode == 0
    assert len(smtp_server.messages) == 2
    assert smtp_server.messages[1].session_id != smtp_server.sessions[0].id
    assert smtp_server.sessions[0].bytes_received == before
    pool.send_message(make_message())
    assert smtp_server.messages[2].session_id == smtp_server.sessions[0].id


@pytest.mark.slow
def test_tls_sessions_survive_fifty_children(
    tls_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> None:
    """Fifty children come and go; the parent's two TLS sessions never notice."""
    pool = pool_factory(
        tls_server, security="starttls", ssl_context=client_context, max_size=2
    )
    with pool.connection() as a, pool.connection() as b:
        a.send_message(make_message())
        b.send_message(make_message())
    parent_sessions = {s.id for s in tls_server.sessions}

    for _ in range(50):
        before = [s.bytes_received for s in tls_server.sessions[:2]]
        in_child(send_and_report(pool))
        assert [s.bytes_received for s in tls_server.sessions[:2]] == before
        pool.send_message(make_message())

    assert len(tls_server.messages) == 2 + 50 + 50
    assert all(m.data.count(b"Message-ID") == 1 for m in tls_server.messages)
    parent_messages = [
        m for m in tls_server.messages if m.session_id in parent_sessions
    ]
    assert len(parent_messages) == 52
    assert pool.stats().created == 2


def test_a_lock_held_at_the_fork_does_not_deadlock_the_child(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Another thread holds the pool's lock when the parent forks."""
    pool = pool_factory()
    pool.send_message(make_message())
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with pool._lock:
            holding.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait(timeout=10)
    try:
        child = in_child(send_and_report(pool))
    finally:
        release.set()
        holder.join(timeout=10)

    assert smtp_server.deliveries(child["message_id"]) == 1


def libc_fork() -> int:
    """fork() straight from the C library, skipping Python's at-fork hooks, as
    uWSGI does without py-call-osafterfork. PyDLL keeps the GIL during the call."""
    fork = ctypes.PyDLL(None).fork
    fork.restype = ctypes.c_int
    return int(fork())


def test_a_fork_that_skips_python_hooks_is_caught_by_the_pid_check(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """With no hook run, the first checkout in the child notices the new pid."""
    pool = pool_factory()
    pool.send_message(make_message())
    before = smtp_server.sessions[0].bytes_received

    child = in_child(send_and_report(pool), fork=libc_fork)

    assert smtp_server.deliveries(child["message_id"]) == 1
    assert (child["fork_resets"], child["forked"]) == (1, 1)
    assert smtp_server.sessions[0].bytes_received == before
    pool.send_message(make_message())
    assert smtp_server.messages[-1].session_id == smtp_server.sessions[0].id


def test_a_connection_taken_before_the_fork_is_refused_in_the_child(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """Using a parent's connection in the child raises; leaving its block there
    writes nothing; the parent goes on with it."""
    pool = pool_factory()

    def use_in_child(conn: Any) -> Callable[[], str]:
        def work() -> str:
            try:
                conn.noop()
            except SMTPPoolError as exc:
                message = str(exc)
            conn.__exit__(None, None, None)
            return message

        return work

    with pool.connection() as conn:
        conn.send_message(make_message())
        before = smtp_server.sessions[0].bytes_received
        message = in_child(use_in_child(conn))
        assert smtp_server.sessions[0].bytes_received == before
        conn.send_message(make_message())

    assert "before a fork; take a new one in this process" in message
    assert len(smtp_server.messages) == 2
    assert len(smtp_server.sessions) == 1
    assert pool.stats().idle == 1


@pytest.mark.parametrize("fork", [os.fork, libc_fork], ids=["os.fork", "libc"])
@pytest.mark.parametrize("server_and_pool", ["none", "starttls"], indirect=True)
def test_a_fork_while_another_thread_awaits_a_reply(
    server_and_pool: tuple[SMTPTestServer, SMTPPool], fork: Callable[[], int]
) -> None:
    """A thread of the parent is reading a reply at the fork, holding smtplib's
    reader lock; the child lets go of that session without taking the lock."""
    server, pool = server_and_pool
    server.on("NOOP", delay=1.0, times=1)
    waiting = threading.Event()

    def noop_slowly() -> None:
        with pool.connection() as conn:
            waiting.set()
            conn.noop()

    thread = threading.Thread(target=noop_slowly)
    thread.start()
    waiting.wait(timeout=10)
    server.wait_until(lambda: server.count("NOOP") == 1)

    child = in_child(send_and_report(pool), fork=fork)
    thread.join(timeout=10)

    assert server.deliveries(child["message_id"]) == 1
    pool.send_message(make_message())
    assert server.messages[-1].session_id == server.sessions[0].id


def test_a_connect_in_progress_at_the_fork_is_let_go_of_in_the_child(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A session another thread is still opening is not in the pool yet; the
    child closes its copy of that socket all the same."""
    pool = pool_factory()
    smtp_server.on("CONNECT", delay=1.0, times=1)
    thread = threading.Thread(target=lambda: pool.send_message(make_message()))
    thread.start()
    # Connected, and smtplib holds the socket: it is waiting for the greeting.
    deadline = time.monotonic() + 10
    while not any(smtp.sock is not None for smtp in list(_smtp._everyone)):
        assert time.monotonic() < deadline, "the connect never started"
        time.sleep(0.01)

    def sockets_to_the_server() -> int:
        count = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                sock = socket.socket(fileno=os.dup(int(name)))
            except OSError:
                continue
            with sock, contextlib.suppress(OSError, IndexError, TypeError):
                count += sock.getpeername()[1] == smtp_server.port
        return count

    assert in_child(sockets_to_the_server) == 0
    thread.join(timeout=10)
    assert len(smtp_server.messages) == 1


def test_threads_of_a_hookless_child_wait_for_the_reset(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """While one thread of the child resets the pool, another that uses the pool
    waits for it, instead of reaching the parent's idle sessions.

    The hookless fork is made from a single-threaded child, so that no thread of
    this process (the test server's) holds a lock of Python's own at the fork:
    starting threads after a fork that skips Python's hooks needs that.
    """
    pool = pool_factory()

    def in_the_grandchild() -> dict[str, Any]:
        resetting, go_on = threading.Event(), threading.Event()
        start_empty = pool._start_empty

        def slow_start_empty() -> None:
            start_empty()
            resetting.set()
            go_on.wait(timeout=10)

        pool._start_empty = slow_start_empty  # type: ignore[method-assign]
        first = threading.Thread(target=lambda: pool.send_message(make_message()))
        first.start()
        resetting.wait(timeout=10)
        second = threading.Thread(target=lambda: pool.send_message(make_message()))
        second.start()
        second.join(timeout=0.3)  # time enough to send, were it not waiting
        waited = second.is_alive()
        go_on.set()
        first.join(timeout=10)
        second.join(timeout=10)
        return {"waited": waited, "fork_resets": pool.stats().fork_resets}

    def in_the_child() -> Any:
        pool.send_message(make_message())  # a session of the child's, then:
        return in_child(in_the_grandchild, fork=libc_fork)

    assert in_child(in_the_child) == {"waited": True, "fork_resets": 2}
    assert len(smtp_server.messages) == 3
    # The child's session carried its one message and nothing from the grandchild.
    child_session = smtp_server.sessions[smtp_server.messages[0].session_id - 1]
    assert child_session.commands == ("EHLO", "MAIL", "RCPT", "DATA")


def test_a_hookless_child_has_its_own_rate_limit(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """The parent used its turn; the child's first message does not wait for it."""

    def must_not_wait(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for the parent's turn")

    pool = pool_factory(rate_limit=1, rate_period=3600, sleep=must_not_wait)
    pool.send_message(make_message())

    child = in_child(send_and_report(pool), fork=libc_fork)

    assert smtp_server.deliveries(child["message_id"]) == 1


def test_the_ehlo_name_lock_held_at_a_hookless_fork(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A parent thread is working out the EHLO name at the fork."""
    pool = pool_factory(local_hostname=None)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _session._hostname_lock_here():
            holding.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=10)
    try:
        child = in_child(send_and_report(pool), fork=libc_fork)
    finally:
        release.set()
        holder.join(timeout=10)

    assert smtp_server.deliveries(child["message_id"]) == 1
