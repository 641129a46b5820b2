"""Many threads through one pool: every message once, never more sessions than
max_size, each session used by one thread at a time, no descriptor left open."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import make_message

# What one session may say, in order, if only one thread at a time uses it: the
# handshake, then whole transactions with checks and resets between them.
_WELL_FORMED = re.compile(r"EHLO( NOOP| RSET)*( MAIL RCPT DATA( NOOP| RSET)*)*( QUIT)?")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def send_from_threads(pool: SMTPPool, threads: int, per_thread: int) -> list[str]:
    """Send from many threads at once; return the Message-IDs sent."""
    start = threading.Barrier(threads)

    def work(_: int) -> list[str]:
        start.wait()
        sent = []
        for _ in range(per_thread):
            msg = make_message()
            pool.send_message(msg)
            sent.append(msg["Message-ID"])
        return sent

    with ThreadPoolExecutor(max_workers=threads) as executor:
        results = list(executor.map(work, range(threads)))
    return [message_id for sent in results for message_id in sent]


def assert_delivered_once(server: SMTPTestServer, sent: list[str]) -> None:
    received = [m.message_id for m in server.messages]
    assert sorted(received) == sorted(sent)
    assert len(set(received)) == len(received)


def test_strict_server_sees_one_thread_per_session(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """F11: 8 threads x 50 messages through a pool of 2."""
    pool = pool_factory(max_size=2)

    sent = send_from_threads(pool, threads=8, per_thread=50)
    pool.close()

    assert_delivered_once(smtp_server, sent)
    assert smtp_server.peak_sessions <= 2
    smtp_server.wait_for_sessions_closed()
    for session in smtp_server.sessions:
        assert 503 not in session.replies
        assert _WELL_FORMED.fullmatch(" ".join(session.commands)), session.commands


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_64_threads_through_4_sessions(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """64 threads x 200 messages, max_size=4; descriptors back to where they were."""
    before = open_descriptors()
    pool = pool_factory(max_size=4, acquire_timeout=60)

    sent = send_from_threads(pool, threads=64, per_thread=200)
    pool.close()
    smtp_server.wait_for_sessions_closed()

    assert len(sent) == 12_800
    assert_delivered_once(smtp_server, sent)
    assert smtp_server.peak_sessions <= 4
    assert open_descriptors() == before
