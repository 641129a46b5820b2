"""smtppool.django with Django's mail API, sending to the test server."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# A real settings module, named before Django is imported and set up.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.deploy.django_settings")

import django
from django.core import mail
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.test.utils import override_settings

import smtppool.django
from smtppool.testing import ReceivedMessage, SMTPTestServer

from .conftest import in_child, parsed

django.setup()


@pytest.fixture
def server(smtp_server: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """The test server, as Django's EMAIL_HOST and EMAIL_PORT."""
    with override_settings(EMAIL_HOST=smtp_server.host, EMAIL_PORT=smtp_server.port):
        yield smtp_server
    smtppool.django.close_pools()


def shape(received: ReceivedMessage) -> list[tuple[str, str | None, str]]:
    """A message's parts, without what differs between two renderings (the
    MIME boundary)."""
    return [
        (part.get_content_type(), part.get_filename(), part.get_payload())
        for part in parsed(received).walk()
        if not part.is_multipart()
    ]


def test_each_api_delivers(server: SMTPTestServer) -> None:
    """send_mail, send_mass_mail, mail_admins, mail_managers, EmailMessage.send
    and get_connection all go through the pool."""
    assert mail.send_mail("one", "body", None, ["a@example.test"]) == 1
    assert (
        mail.send_mass_mail(
            [
                ("two", "b", None, ["b@example.test"]),
                ("three", "c", None, ["c@example.test"]),
            ]
        )
        == 2
    )
    mail.mail_admins("four", "for the admins")
    mail.mail_managers("four and a half", "for the managers")
    assert mail.EmailMessage("five", "e", to=["e@example.test"]).send() == 1
    with mail.get_connection() as connection:
        assert (
            connection.send_messages(
                [mail.EmailMessage("six", "f", to=["f@example.test"])]
            )
            == 1
        )

    subjects = [parsed(m)["Subject"] for m in server.messages]
    assert subjects == [
        "one",
        "two",
        "three",
        "[Django] four",
        "[Django] four and a half",
        "five",
        "six",
    ]
    assert server.messages[3].rcpt_tos == ("admin@example.test",)
    assert server.messages[4].rcpt_tos == ("manager@example.test",)
    assert len(server.sessions) == 1


def test_same_message_as_djangos_own_backend(server: SMTPTestServer) -> None:
    """Alternatives, attachments, headers and envelope as Django's SMTP backend
    delivers them."""

    def build() -> mail.EmailMultiAlternatives:
        message = mail.EmailMultiAlternatives(
            "Ünïcode subject",
            "plain text",
            "Shop <shop@example.test>",
            ["Buyer <buyer@example.test>"],
            bcc=["audit@example.test"],
            cc=["copy@example.test"],
            reply_to=["help@example.test"],
            headers={"Message-ID": "<same@example.test>", "Date": "Fri, 4 Dec 2026"},
        )
        message.attach_alternative("<p>html</p>", "text/html")
        message.attach("data.bin", bytes(range(256)), "application/octet-stream")
        message.attach("notes.txt", "some notes\n", "text/plain")
        return message

    build().send()
    DjangoSMTPBackend(host=server.host, port=server.port).send_messages([build()])

    ours, djangos = server.messages
    assert (ours.mail_from, ours.rcpt_tos) == (djangos.mail_from, djangos.rcpt_tos)
    headers = ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "Date")
    assert [parsed(ours)[h] for h in headers] == [parsed(djangos)[h] for h in headers]
    assert parsed(ours)["Bcc"] is None
    assert shape(ours) == shape(djangos)


def test_one_session_inside_a_connection_block(server: SMTPTestServer) -> None:
    """F15: twenty messages inside one get_connection() block, one session."""
    with mail.get_connection() as connection:
        for i in range(20):
            mail.EmailMessage(
                f"m{i}", "b", to=["to@example.test"], connection=connection
            ).send()

    assert len(server.messages) == 20
    assert len(server.sessions) == 1


def test_threads_share_at_most_max_size_sessions(server: SMTPTestServer) -> None:
    """Outside a block each call borrows from the process-wide pool."""
    with override_settings(
        SMTPPOOL={"local_hostname": "c.example.test", "max_size": 2}
    ):
        threads = [
            threading.Thread(
                target=lambda i=i: [
                    mail.send_mail(f"t{i}-{n}", "b", None, ["to@example.test"])
                    for n in range(10)
                ]
            )
            for i in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    assert len(server.messages) == 60
    assert server.peak_sessions <= 2


def test_a_send_after_the_server_dropped_the_session(server: SMTPTestServer) -> None:
    """The warm session is gone; the next send opens another."""
    mail.send_mail("before", "b", None, ["to@example.test"])
    server.drop_sessions()
    server.wait_for_sessions_closed()

    assert mail.send_mail("after", "b", None, ["to@example.test"]) == 1
    assert [parsed(m)["Subject"] for m in server.messages] == ["before", "after"]


def test_nothing_listening(
    smtp_server_factory: Callable[..., SMTPTestServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """F13: fail_silently returns 0 and logs; otherwise the connect error names
    the host and port, with nothing chained to it."""
    stopped = smtp_server_factory()
    stopped.stop()
    address = f"{stopped.host}:{stopped.port}"

    with override_settings(EMAIL_HOST=stopped.host, EMAIL_PORT=stopped.port):
        sent = mail.send_mail("x", "b", None, ["to@example.test"], fail_silently=True)
        with pytest.raises(ConnectionRefusedError) as failure:
            mail.send_mail("x", "b", None, ["to@example.test"])
    smtppool.django.close_pools()

    assert sent == 0
    assert f"send.silenced address={address}" in caplog.text
    assert address in str(failure.value)
    assert failure.value.__cause__ is None
    assert failure.value.__suppress_context__


def test_fail_silently_swallows_refusals_and_counts(
    server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused message is not counted; the others still go."""
    caplog.set_level(logging.WARNING, logger="smtppool")
    server.on("MAIL", "550 5.7.1 not you", times=1)
    messages = [
        mail.EmailMessage(f"m{i}", "b", to=["to@example.test"]) for i in range(3)
    ]
    messages.append(mail.EmailMessage("nobody", "b"))  # skipped, as Django does

    sent = mail.get_connection(fail_silently=True).send_messages(messages)

    assert sent == 2
    assert len(server.messages) == 2
    assert "send.silenced" in caplog.text


def test_tls_and_ssl_together_is_djangos_error() -> None:
    """The same ValueError Django raises."""
    with pytest.raises(ValueError, match="mutually exclusive"):
        mail.get_connection(use_tls=True, use_ssl=True)


def test_the_locmem_backend_is_untouched(server: SMTPTestServer) -> None:
    """Django's test runner switches to locmem; nothing reaches the server."""
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"
    ):
        mail.outbox = []
        mail.send_mail("kept", "b", None, ["to@example.test"])
        outbox: list[Any] = mail.outbox

    assert [m.subject for m in outbox] == ["kept"]
    assert server.messages == []


def test_without_django_the_import_names_the_extra() -> None:
    """Importing smtppool.django where Django is missing says what to install."""
    code = (
        "import sys; sys.modules['django'] = None\n"
        "try:\n"
        "    import smtppool.django\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'smtppool[django]'" in result.stdout


def test_djangos_timeout_wins_over_smtppool(server: SMTPTestServer) -> None:
    """EMAIL_TIMEOUT, or get_connection(timeout=), over SMTPPOOL's timeout."""
    assert mail.get_connection(timeout=0.5).pool.config.timeout == 0.5
    with override_settings(EMAIL_TIMEOUT=1.5):
        assert mail.get_connection().pool.config.timeout == 1.5
    assert mail.get_connection().pool.config.timeout == 5  # SMTPPOOL's


def test_client_certificate_settings(server: SMTPTestServer) -> None:
    """Ignored without TLS, as Django ignores them; with SMTPPOOL's own context
    too, one sentence saying what to do."""
    with override_settings(EMAIL_SSL_CERTFILE="/nonexistent/cert.pem"):
        assert mail.send_mail("plain", "b", None, ["to@example.test"]) == 1
    with (
        override_settings(
            EMAIL_USE_TLS=True,
            EMAIL_SSL_CERTFILE="/nonexistent/cert.pem",
            SMTPPOOL={"ssl_context": ssl.create_default_context()},
        ),
        pytest.raises(ValueError, match="load_cert_chain"),
    ):
        mail.send_mail("tls", "b", None, ["to@example.test"])


def test_silenced_errors_are_logged_without_addresses(
    server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The log says which error and reply code, not who was refused."""
    server.on("RCPT", "550 5.1.1 no such user")
    sent = mail.send_mail(
        "x", "b", None, ["secret.person@example.test"], fail_silently=True
    )

    assert sent == 0
    assert "send.silenced" in caplog.text
    assert "reply=550" in caplog.text
    assert "secret.person" not in caplog.text


def test_pools_of_many_configurations_are_bounded(server: SMTPTestServer) -> None:
    """Per-tenant logins make a pool each; the oldest are closed."""
    with override_settings(SMTPPOOL={"allow_unencrypted_auth": True}):
        for tenant in range(smtppool.django.MAX_POOLS + 5):
            connection = mail.get_connection(username=f"tenant{tenant}", password="pw")
            connection.pool  # noqa: B018 - building the pool is the point

    assert len(smtppool.django._pools) == smtppool.django.MAX_POOLS


def test_a_fork_while_a_thread_holds_the_pools_lock(server: SMTPTestServer) -> None:
    """The child makes its own lock for the table of pools."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with smtppool.django._pools_lock_here():
            holding.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
            sent = in_child(
                lambda: mail.send_mail("from a child", "b", None, ["to@example.test"])
            )
    finally:
        release.set()
        holder.join(timeout=10)

    assert sent == 1
    assert len(server.messages) == 1


def test_a_port_that_is_not_a_number(server: SMTPTestServer) -> None:
    """One sentence naming the setting, at the first send."""
    with (
        override_settings(EMAIL_PORT="smtp"),
        pytest.raises(ValueError, match="EMAIL_PORT must be a port number"),
    ):
        mail.send_mail("x", "b", None, ["to@example.test"])


def test_a_login_without_tls_is_refused_even_when_failing_silently(
    server: SMTPTestServer,
) -> None:
    """A password in clear text is a setting to fix, not a send to swallow."""
    with (
        override_settings(EMAIL_HOST_USER="app", EMAIL_HOST_PASSWORD="pw"),
        pytest.raises(ValueError, match="neither EMAIL_USE_TLS nor EMAIL_USE_SSL"),
    ):
        mail.send_mail("x", "b", None, ["to@example.test"], fail_silently=True)

    assert server.sessions == []
    with (
        override_settings(EMAIL_HOST_USER="app", EMAIL_HOST_PASSWORD="pw"),
        pytest.raises(ValueError, match="password would cross") as raised,
    ):
        mail.send_mail("x", "b", None, ["to@example.test"])
    assert "SMTPPOOL = {'allow_unencrypted_auth': True}" in str(raised.value)


@pytest.mark.parametrize(
    "headers",
    [
        {"Reply-To": "x@example.com\x1cfake"},
        {"X-Ref": "abc\x0bReply-To : attacker@example.test"},
    ],
)
def test_headers_django_lets_through_are_refused(
    server: SMTPTestServer, headers: dict[str, str]
) -> None:
    """Django 5.2 refuses CR and LF in a header; the other characters Python's
    email package writes as line breaks are refused too, even when failing
    silently. (Django 6 builds with the modern policy, which refuses them
    itself.)"""
    message = mail.EmailMessage(
        "subject", "body", "s@example.test", ["r@example.test"], headers=headers
    )

    with pytest.raises(ValueError, match=r"header contains a line break|linefeed"):
        message.send(fail_silently=True)

    assert server.count("MAIL") == 0
    assert "message" not in vars(message)
    assert mail.EmailMessage("s", "b", None, ["r@example.test"]).send() == 1
