"""OAuth2 (AUTH XOAUTH2) with a token provider, and passwords given as callables,
against the test server over STARTTLS with certificates from trustme."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Iterator

import pytest

from smtppool import SMTPPool
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


def test_xoauth2_logs_in_with_the_providers_token(
    secure_server: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> None:
    tokens = Tokens("token-1", "token-2")
    tokens.valid = {"token-1"}
    server = secure_server(xoauth2=tokens.check)
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username=USER,
        oauth_token=tokens,
    )

    for _ in range(3):
        pool.send_message(make_message())

    (session,) = server.sessions
    assert session.authenticated_as == USER
    assert session.commands.count("AUTH") == 1
    assert tokens.calls == 1, "one token per session, not per message"
    assert len(server.messages) == 3


def test_a_token_that_expired_is_asked_for_again(
    secure_server: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> None:
    """The first session's token expires with it; the next session is first
    given the stale one (334, then 535), asks the provider again, and goes on."""
    tokens = Tokens("token-1", "token-1", "token-2")
    tokens.valid = {"token-1"}
    server = secure_server(xoauth2=tokens.check)
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username=USER,
        oauth_token=tokens,
    )
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
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = Tokens(SECRETS[0], SECRETS[1])
    server = secure_server(xoauth2=tokens.check)
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username=USER,
        oauth_token=tokens,
    )

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
