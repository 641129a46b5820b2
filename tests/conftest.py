"""Fixtures shared by the test suite: a fake clock, pools bound to a test server,
and messages with unique Message-IDs."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import itertools
import json
import logging
import os
import select
import signal
import ssl
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import trustme

import smtppool
from smtppool import SMTPPool
from smtppool.testing import ReceivedMessage, SessionRecord, SMTPTestServer

_ids = itertools.count(1)


@attrs.define
class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    now: float = 1000.0
    sleeps: list[float] = attrs.field(factory=list)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Record a sleep and move the clock by it, at once."""
        self.sleeps.append(seconds)
        self.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority that only the test suite trusts."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that verifies against the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def parsed(received: ReceivedMessage) -> email.message.EmailMessage:
    """A message the test server received, parsed with the modern email API."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        received.data
    )
    assert isinstance(message, email.message.EmailMessage)
    return message


def make_message(subject: str = "hello") -> email.message.EmailMessage:
    """A small message with a Message-ID nobody else uses."""
    msg = email.message.EmailMessage()
    msg["From"] = "sender@example.test"
    msg["To"] = "rcpt@example.test"
    msg["Subject"] = subject
    # The pid keeps ids unique in forked children, which copy the counter.
    msg["Message-ID"] = f"<{next(_ids)}.{os.getpid()}.smtppool-test@example.test>"
    msg.set_content("A message from the smtppool test suite.\n")
    return msg


def in_child(
    work: Callable[[], Any],
    *,
    fork: Callable[[], int] = os.fork,
    timeout: float = 30.0,
) -> Any:
    """Run ``work`` in a forked child and return its JSON-able result.

    A child that has not answered within ``timeout`` seconds (deadlocked, say) is
    killed and the test fails.
    """
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:  # the child: never return into pytest
        try:
            result = {"ok": work()}
        except BaseException:
            result = {"error": traceback.format_exc()}
        try:
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        if not select.select([pipe], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child did not finish within {timeout} s")
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result = json.loads(output)
    if "error" in result:
        pytest.fail(f"the child failed:\n{result['error']}")
    return result["ok"]


@pytest.fixture
def message() -> Callable[..., email.message.EmailMessage]:
    return make_message


@pytest.fixture
def pool_factory(
    smtp_server: SMTPTestServer,
) -> Iterator[Callable[..., SMTPPool]]:
    """Build pools for a server (the plain ``smtp_server`` unless one is passed);
    every pool is closed after the test."""
    pools: list[SMTPPool] = []

    def make(server: SMTPTestServer | None = None, **options: Any) -> SMTPPool:
        server = server or smtp_server
        options.setdefault("security", "none")
        options.setdefault("local_hostname", "client.example.test")
        options.setdefault("timeout", 5.0)
        pool = SMTPPool(server.host, server.port, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def assert_in_sequence(server: SMTPTestServer) -> None:
    """The strict server refused no command as out of sequence (503), but for the
    rest of a pipelined group whose sender or every recipient was refused, which
    the client had sent before it could know (RFC 2920 section 3.1); a server
    without PIPELINING never got a command before it had answered the last."""
    for session in server.sessions:
        if not server.pipelining:
            assert session.pipelined == 0, session
        sender_ok = recipient_ok = False
        for command, reply in answered(session):
            if command == "MAIL":
                sender_ok, recipient_ok = reply == 250, False
            elif command == "RCPT":
                recipient_ok = recipient_ok or reply in (250, 251)
            if reply == 503:
                assert server.pipelining, session
                assert command in ("RCPT", "DATA", "BDAT"), session
                assert not (sender_ok and recipient_ok), session


def answered(session: SessionRecord) -> Iterator[tuple[str, int]]:
    """Each command of a session with the code of the server's reply to it."""
    replies = iter(session.replies[1:])  # after the greeting
    for command in session.commands:
        reply = next(replies, None)
        if reply is None:
            return
        yield command, reply
        if command == "DATA" and reply == 354:
            next(replies, None)  # the reply to the final dot, which is no command


# Passwords the tests log in with. Every record the smtppool logger emits during
# any test, its traceback included, and the text of every exception raised in or
# passing through smtppool's code, is searched for them (never_logs_a_secret).
SECRETS = ("correct-horse-battery-staple", "hunter2-secret")

_SMTPPOOL_DIR = os.path.dirname(smtppool.__file__)


class _ExceptionWatch:
    """A trace function that sees every exception raised in, or passing through,
    a frame of smtppool's code, in every thread, and keeps the texts that hold a
    secret. Line events are turned off, so only calls into smtppool cost more."""

    def __init__(self) -> None:
        self.leaks: list[str] = []

    def on_call(self, frame: Any, event: str, arg: Any) -> Any:
        if event != "call" or not frame.f_code.co_filename.startswith(_SMTPPOOL_DIR):
            return None
        frame.f_trace_lines = False
        return self.in_smtppool

    def in_smtppool(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "exception":
            error = arg[1]
            while error is not None:
                text = f"{error!s} {error!r}"
                self.leaks += [text for secret in SECRETS if secret in text]
                error = error.__cause__ or error.__context__
        return self.in_smtppool


_exception_watch = _ExceptionWatch()


@pytest.fixture(autouse=True, scope="session")
def _watch_exceptions() -> Iterator[None]:
    previous = sys.gettrace()
    sys.settrace(_exception_watch.on_call)
    threading.settrace(_exception_watch.on_call)
    yield
    threading.settrace(previous)  # type: ignore[arg-type]
    sys.settrace(previous)


class _SecretWatch(logging.Handler):
    """Keeps the text of every record, formatted as a log file would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture(autouse=True)
def never_logs_a_secret() -> Iterator[None]:
    logger = logging.getLogger("smtppool")
    watch = _SecretWatch()
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
    leaks = [text for text in watch.texts for secret in SECRETS if secret in text]
    assert not leaks, f"a test password reached the log: {leaks[:3]}"
    raised, _exception_watch.leaks = _exception_watch.leaks, []
    assert not raised, f"a test password reached an exception: {raised[:3]}"
