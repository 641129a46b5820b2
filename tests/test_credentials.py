"""Credentials: OAuth2 (AUTH XOAUTH2) with a token provider, passwords given as
callables, and rotating credentials with sends in flight; against the test server
over STARTTLS with certificates from trustme."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from smtppool import SMTPPool
from smtppool.exceptions import CredentialsUnavailable
from smtppool.testing import SMTPTestServer

from .conftest import SECRETS, make_message

USER = "app@example.test"


class Tokens:
    """A token provider that hands out the tokens it is given, in turn, and an
    authority that accepts only those it is told are valid."""

    def __init__(self, *handed_out: str) -> None:
        self._handed_out: Iterator[str] = iter(handed_out)
        self.valid: set[str] = set()
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return next(self._handed_out)

    def check(self, user: str, token: str) -> bool:
        return user == USER and token in self.valid


@pytest.fixture
def secure_server(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
) -> Callable[..., SMTPTestServer]:
    def make(**options: object) -> SMTPTestServer:
        return smtp_server_factory(tls_context=server_context, **options)

    return make


@pytest.fixture
def oauth_pool(
    pool_factory: Callable[..., SMTPPool], client_context: ssl.SSLContext
) -> Callable[..., SMTPPool]:
    """A pool that logs in to a server with XOAUTH2 over verified STARTTLS."""

    def make(server: SMTPTestServer, tokens: Tokens, **options: object) -> SMTPPool:
        return pool_factory(
            server,
            security="starttls",
            ssl_context=client_context,
            username=USER,
            oauth_token=tokens,
            **options,
        )

    return make


def test_xoauth2_logs_in_with_the_providers_token(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
) -> None:
    tokens = Tokens("token-1", "token-2")
    tokens.valid = {"token-1"}
    server = secure_server(xoauth2=tokens.check)
    pool = oauth_pool(server, tokens)

    for _ in range(3):
        pool.send_message(make_message())

    (session,) = server.sessions
    assert session.authenticated_as == USER
    assert session.commands.count("AUTH") == 1
    assert tokens.calls == 1, "one token per session, not per message"
    assert len(server.messages) == 3


def test_a_token_that_expired_is_asked_for_again(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
) -> None:
    """The first session's token expires with it; the next session is first
    given the stale one (334, then 535), asks the provider again, and goes on."""
    tokens = Tokens("token-1", "token-1", "token-2")
    tokens.valid = {"token-1"}
    server = secure_server(xoauth2=tokens.check)
    pool = oauth_pool(server, tokens)
    pool.send_message(make_message())

    tokens.valid = {"token-2"}
    # The pool finds the session gone when it next checks it out.
    server.drop_sessions()
    pool.send_message(make_message())

    _, second = server.sessions
    assert second.commands.count("AUTH") == 2
    refused = second.replies.index(334)
    assert second.replies[refused : refused + 3] == (334, 535, 235)
    assert second.authenticated_as == USER
    assert tokens.calls == 3
    assert len(server.messages) == 2


def test_a_token_refused_twice_is_the_callers_error(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = Tokens(SECRETS[0], SECRETS[1])
    server = secure_server(xoauth2=tokens.check)
    pool = oauth_pool(server, tokens)

    with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
        pool.send_message(make_message())

    assert failure.value.smtp_code == 535
    assert tokens.calls == 2
    assert server.messages == []
    for secret in SECRETS:
        assert secret not in str(failure.value)
        assert secret not in repr(pool) + repr(pool.config) + caplog.text


def test_a_password_may_be_a_callable_asked_at_each_login(
    secure_server: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> None:
    asked: list[str] = []

    def password() -> str:
        asked.append("now")
        return SECRETS[0]

    server = secure_server(auth=("app", SECRETS[0]), require_auth=True)
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username="app",
        password=password,
        max_size=2,
    )

    with pool.connection() as first, pool.connection() as second:
        first.send_message(make_message())
        second.send_message(make_message())

    assert len(asked) == 2
    assert [s.authenticated_as for s in server.sessions] == ["app", "app"]
    assert SECRETS[0] not in repr(pool.config)


@pytest.mark.parametrize(
    ("options", "error", "sentence"),
    [
        (
            {"username": "u", "password": "p", "oauth_token": lambda: "t"},
            ValueError,
            "password or oauth_token, not both",
        ),
        ({"oauth_token": lambda: "t"}, ValueError, "must be given together"),
        ({"username": "u", "oauth_token": "t"}, TypeError, "callable"),
        ({"username": "u", "password": 42}, TypeError, "string, a callable"),
    ],
)
def test_bad_credentials_settings_fail_at_construction(
    options: dict[str, object], error: type[Exception], sentence: str
) -> None:
    with pytest.raises(error, match=sentence):
        SMTPPool("mail.example.test", 587, **options)  # type: ignore[arg-type]


def test_rotating_credentials_lets_a_send_in_flight_finish(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
) -> None:
    """New credentials while one thread waits for the reply to its message and
    another session sits idle: the idle one closes at once, the busy one
    delivers and is closed when it comes back, and the next session logs in
    with the new token."""
    old, new = Tokens("old", "old"), Tokens("new")
    old.valid = {"old", "new"}
    server = secure_server(xoauth2=old.check)
    pool = oauth_pool(server, old, max_size=2)
    with pool.connection(), pool.connection():
        pass  # two sessions, logged in with the old token, now idle
    server.on(".", delay=1.0, times=1)
    in_flight = make_message()
    failures: list[BaseException] = []

    def send() -> None:
        try:
            pool.send_message(in_flight)
        except BaseException as exc:  # reported below
            failures.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    server.wait_until(lambda: server.deliveries(in_flight["Message-ID"]) == 1)

    pool.set_credentials(username=USER, oauth_token=new)

    assert sender.is_alive(), "the send finished early; test proves nothing"
    server.wait_until(lambda: server.open_sessions == 1)
    sender.join(timeout=10)
    assert failures == []
    pool.send_message(make_message())

    assert (old.calls, new.calls) == (2, 1)
    assert server.deliveries(in_flight["Message-ID"]) == 1
    assert pool.stats().closed.drained == 2
    assert pool.stats().size == 1


def test_a_held_connection_moves_to_the_new_credentials_between_messages(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
) -> None:
    old, new = Tokens("old"), Tokens("new")
    old.valid = {"old", "new"}
    server = secure_server(xoauth2=old.check)
    pool = oauth_pool(server, old)

    with pool.connection() as held:
        held.send_message(make_message())
        pool.set_credentials(username=USER, oauth_token=new)
        held.send_message(make_message())

    assert (old.calls, new.calls) == (1, 1)
    assert [s.authenticated_as for s in server.sessions] == [USER, USER]
    assert pool.stats().closed.drained == 1


def test_drain_while_a_returned_session_is_being_reset(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """drain() after checkin has found the session fresh but before it is back on
    the idle stack (here: while its RSET is answered): it is closed, not kept."""
    pool = pool_factory()
    smtp_server.on("RSET", delay=1.0, times=1)

    def fail_after_sending() -> None:
        with (
            contextlib.suppress(RuntimeError),
            pool.connection() as conn,
        ):
            conn.send_message(make_message())
            raise RuntimeError("the caller's own bug: the block needs an RSET")

    returning = threading.Thread(target=fail_after_sending)
    returning.start()
    smtp_server.wait_until(lambda: smtp_server.count("RSET") == 1)
    pool.drain()
    returning.join(timeout=10)

    assert not returning.is_alive()
    smtp_server.wait_for_sessions_closed()
    assert smtp_server.sessions[0].commands[-2:] == ("RSET", "QUIT")
    assert pool.stats().closed.drained == 1
    assert pool.stats().size == 0


def test_drain_with_nothing_lent_closes_every_session(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    pool = pool_factory(max_size=3)
    with pool.connection(), pool.connection(), pool.connection():
        pass

    pool.drain()

    smtp_server.wait_for_sessions_closed()
    assert [s.commands[-1] for s in smtp_server.sessions] == ["QUIT"] * 3
    assert pool.stats().size == 0
    pool.send_message(make_message())
    assert len(smtp_server.sessions) == 4


def test_bad_new_credentials_keep_the_old_ones(
    pool_factory: Callable[..., SMTPPool],
) -> None:
    pool = SMTPPool("mail.example.test", 587, username="app", password="old")

    with pytest.raises(ValueError, match="not both"):
        pool.set_credentials(username="app", password="x", oauth_token=lambda: "t")

    assert pool.config.username == "app"
    assert pool.config.oauth_token is None


@pytest.mark.parametrize(
    "failure", [ConnectionRefusedError, ConnectionResetError, TimeoutError, KeyError]
)
def test_a_failing_provider_is_not_the_servers_fault(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
    failure: type[Exception],
) -> None:
    """A token service that cannot be reached: its error, as the cause of one that
    says where it came from; not a lost SMTP session, so not tried again."""
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        raise failure("token endpoint unreachable")

    server = secure_server(xoauth2=lambda user, token: True)
    pool = oauth_pool(server, provider)  # type: ignore[arg-type]

    with pytest.raises(CredentialsUnavailable) as raised:
        pool.send_message(make_message())

    assert isinstance(raised.value.__cause__, failure)
    assert f"the oauth_token callable raised {failure.__name__}" in str(raised.value)
    assert f"{server.host}:{server.port}" not in str(raised.value)
    assert len(calls) == 1
    assert len(server.sessions) == 1
    assert server.messages == []


def test_a_failing_password_callable(
    secure_server: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> None:
    def vault() -> str:
        raise OSError("vault sealed")

    server = secure_server(auth=(USER, SECRETS[0]))
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username=USER,
        password=vault,
    )

    with pytest.raises(CredentialsUnavailable, match="password callable raised"):
        pool.send_message(make_message())

    assert server.sessions[0].authenticated_as is None


def test_an_empty_token_is_not_sent(
    secure_server: Callable[..., SMTPTestServer],
    oauth_pool: Callable[..., SMTPPool],
) -> None:
    server = secure_server(xoauth2=lambda user, token: True)
    pool = oauth_pool(server, Tokens(""))

    with pytest.raises(ValueError, match="returned an empty token"):
        pool.send_message(make_message())

    assert "AUTH" not in server.sessions[0].commands


@pytest.mark.parametrize("mechanism", ["password", "oauth_token"])
def test_503_to_auth_is_a_refusal(
    secure_server: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
    mechanism: str,
) -> None:
    """smtplib reads 503 as "already logged in"; on a new session it is not."""
    server = secure_server(auth=(USER, SECRETS[0]), xoauth2=lambda user, token: True)
    server.on("AUTH", "503 5.5.1 Bad sequence of commands")
    secret: object = Tokens("token") if mechanism == "oauth_token" else SECRETS[0]
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username=USER,
        **{mechanism: secret},
    )

    with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
        pool.send_message(make_message())

    assert raised.value.smtp_code == 503
    assert server.count("MAIL") == 0
    assert pool.stats().size == 0
