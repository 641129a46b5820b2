"""STARTTLS, implicit TLS and login, with certificates from trustme."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer

from .conftest import SECRETS, make_message

PASSWORD = SECRETS[0]


def test_starttls_then_ehlo_again_then_login_once(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """A STARTTLS session says EHLO twice and logs in once for many messages."""
    server = smtp_server_factory(
        tls_context=server_context, auth=("app", PASSWORD), require_auth=True
    )
    pool = pool_factory(
        server,
        security="starttls",
        ssl_context=client_context,
        username="app",
        password=PASSWORD,
    )
    for _ in range(3):
        pool.send_message(make_message())

    (session,) = server.sessions
    assert session.tls
    assert session.authenticated_as == "app"
    assert session.commands[:4] == ("EHLO", "STARTTLS", "EHLO", "AUTH")
    assert session.commands.count("AUTH") == 1
    assert len(server.messages) == 3


def test_implicit_tls(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """security='ssl' speaks TLS from the first byte."""
    server = smtp_server_factory(tls_context=server_context, implicit_tls=True)
    pool = pool_factory(server, security="ssl", ssl_context=client_context)
    msg = make_message()

    pool.send_message(msg)

    assert server.sessions[0].tls
    assert "STARTTLS" not in server.sessions[0].commands
    assert server.deliveries(msg["Message-ID"]) == 1


def test_default_context_verifies_the_certificate(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    server_context: ssl.SSLContext,
) -> None:
    """Without a context the system's trust store is used, so an unknown CA fails
    before AUTH and the password never leaves the client."""
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))
    pool = pool_factory(server, security="starttls", username="app", password=PASSWORD)

    with pytest.raises(ssl.SSLCertVerificationError):
        pool.send_message(make_message())

    assert "AUTH" not in server.sessions[0].commands
    assert pool.stats().size == 0


def test_secrets_stay_out_of_repr_logs_and_errors(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither a good nor a bad password shows up in repr, logs or errors."""
    caplog.set_level(logging.DEBUG, logger="smtppool")
    server = smtp_server_factory(auth=("app", PASSWORD))
    # On localhost, in clear text, on purpose: this test is about what is shown.
    plain = {"allow_unencrypted_auth": True}
    good = pool_factory(server, username="app", password=PASSWORD, **plain)
    wrong = "wrong-" + PASSWORD
    bad = pool_factory(server, username="app", password=wrong, **plain)

    good.send_message(make_message())
    with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
        bad.send_message(make_message())

    shown = " ".join(
        [
            *(repr(pool) for pool in (good, bad, good.config, bad.config)),
            str(good.stats()),
            str(failure.value),
            repr(failure.value),
            caplog.text,
        ]
    )
    assert "connect.complete" in caplog.text
    assert PASSWORD not in shown
    assert wrong not in shown


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def test_the_default_context_is_made_once_per_pool(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    server_context: ssl.SSLContext,
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without ssl_context the pool verifies against the system's certificates,
    loaded once (milliseconds each time), not for every session it opens."""
    server = smtp_server_factory(tls_context=server_context)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    pool = pool_factory(server, security="starttls", max_size=2)

    with pool.connection() as first:
        first.send_message(make_message())
        # A store without our CA: a context made now would refuse the server.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file.with_name("missing.pem")))
        with pool.connection() as second:
            second.send_message(make_message())

    assert [session.tls for session in server.sessions] == [True, True]
    assert len(server.messages) == 2
    with pytest.raises(ssl.SSLCertVerificationError):
        pool_factory(server, security="starttls").send_message(make_message())


def test_starttls_required_and_not_offered_stops_before_any_secret(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server without STARTTLS: no AUTH, no MAIL in clear text, and an error
    that says what to change."""
    server = smtp_server_factory(auth=("app", PASSWORD))
    pool = pool_factory(server, security="starttls", username="app", password=PASSWORD)

    with pytest.raises(smtplib.SMTPNotSupportedError, match="does not offer STARTTLS"):
        pool.send_message(make_message())

    (session,) = server.sessions
    assert session.commands == ("EHLO",)
    assert server.messages == []
    assert pool.stats().size == 0
    assert PASSWORD not in caplog.text


def test_implicit_tls_against_a_plain_port_says_to_use_starttls(
    smtp_server: SMTPTestServer,
    pool_factory: Callable[..., SMTPPool],
    client_context: ssl.SSLContext,
) -> None:
    """security='ssl' meets a plain greeting: OpenSSL's WRONG_VERSION_NUMBER,
    turned into what to change."""
    pool = pool_factory(security="ssl", ssl_context=client_context)

    with pytest.raises(ssl.SSLError, match=r"plain text.*security='starttls'") as error:
        pool.send_message(make_message())

    assert isinstance(error.value.__cause__, ssl.SSLError)
    assert len(smtp_server.sessions) == 1
    assert smtp_server.messages == []
    assert pool.stats().size == 0


def test_starttls_against_an_implicit_tls_port_says_to_use_ssl(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """The server waits for a TLS handshake, the client for a greeting: after one
    timeout (not one per retry), an error that says what to change."""
    server = smtp_server_factory(tls_context=server_context, implicit_tls=True)
    pool = pool_factory(
        server, security="starttls", ssl_context=client_context, timeout=1
    )

    with pytest.raises(TimeoutError, match=r"no greeting within 1 s.*security='ssl'"):
        pool.send_message(make_message())

    # The implicit-TLS server records a session only once TLS is up: never here.
    assert pool.stats().retries == 0, "a greeting that never came is not retried"
    assert pool.stats().size == 0


def test_a_login_in_clear_text_needs_an_explicit_yes(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """security='none' with a password fails at construction, saying how to
    secure it or how to opt in; with the opt-in it logs in."""
    server = smtp_server_factory(auth=("app", PASSWORD))

    with pytest.raises(ValueError, match=r"unencrypted.*allow_unencrypted_auth=True"):
        SMTPPool(
            server.host, server.port, security="none", username="app", password=PASSWORD
        )

    pool = pool_factory(
        server, username="app", password=PASSWORD, allow_unencrypted_auth=True
    )
    pool.send_message(make_message())
    assert server.sessions[0].authenticated_as == "app"


@pytest.mark.parametrize("trusted", [False, True], ids=["self-signed", "wrong-host"])
def test_f09_a_certificate_that_does_not_verify_stops_before_auth(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    trusted: bool,
) -> None:
    """F09: a certificate for another host name, from an authority the system
    trusts or not. Default settings: a certificate error, and no AUTH ever sent."""
    other = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("mail.other.example").configure_cert(context)
    if trusted:
        other.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    server = smtp_server_factory(tls_context=context, auth=("app", PASSWORD))
    pool = pool_factory(server, security="starttls", username="app", password=PASSWORD)

    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        pool.send_message(make_message())

    reason = "address mismatch" if trusted else "self-signed|unable to get local"
    assert re.search(reason, str(failure.value))
    assert PASSWORD not in str(failure.value)
    for session in server.sessions:
        assert "AUTH" not in session.commands
    assert server.messages == []


def test_auth_offered_only_after_starttls_says_to_use_starttls(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
    server_context: ssl.SSLContext,
) -> None:
    """A server that offers AUTH only over TLS, and a pool that opted out of
    TLS: the error says what to change, and nothing was sent."""
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))
    pool = pool_factory(
        server, username="app", password=PASSWORD, allow_unencrypted_auth=True
    )

    with pytest.raises(smtplib.SMTPNotSupportedError, match="before STARTTLS"):
        pool.send_message(make_message())

    assert server.sessions[0].commands == ("EHLO",)
    assert server.messages == []
