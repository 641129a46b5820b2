"""smtppool.flask in real Flask applications, sending to the test server."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import flask_mail
import flask_mailman
import pytest

from smtppool import SMTPPoolError
from smtppool.flask import Mail
from smtppool.testing import SMTPTestServer

from .conftest import make_message, parsed

AppFactory = Callable[..., flask.Flask]


@pytest.fixture
def app_factory(smtp_server: SMTPTestServer) -> Callable[..., flask.Flask]:
    """Flask apps configured for a test server (the plain one unless given)."""
    apps: list[flask.Flask] = []

    def make(server: SMTPTestServer | None = None, **config: Any) -> flask.Flask:
        server = server or smtp_server
        app = flask.Flask(f"app{len(apps)}")
        defaults = {
            "MAIL_SERVER": server.host,
            "MAIL_PORT": server.port,
            "MAIL_DEFAULT_SENDER": "app@example.test",
            "SMTPPOOL_LOCAL_HOSTNAME": "client.example.test",
        }
        app.config.update({**defaults, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        state = app.extensions.get("smtppool")
        if state is not None and state._pool is not None:
            state._pool.close()


def with_mailman(
    app_factory: AppFactory, server: SMTPTestServer | None = None
) -> tuple[flask.Flask, Mail, Any]:
    """An app with smtppool's Mail and Flask-Mailman sending through it."""
    app = app_factory(server, MAIL_BACKEND="smtppool.flask.EmailBackend")
    return app, Mail(app), flask_mailman.Mail(app)


def sending_app(app: flask.Flask, mail: Mail) -> flask.Flask:
    """Add a view that sends one Flask-Mail message per request."""

    @app.post("/signup/<name>")
    def signup(name: str) -> str:
        mail.send(flask_mail.Message(f"welcome {name}", recipients=[f"{name}@x.test"]))
        return "sent"

    return app


def test_requests_share_a_few_sessions(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """Twenty requests, one SMTP session."""
    mail = Mail()
    app = sending_app(app_factory(), mail)
    mail.init_app(app)
    client = app.test_client()

    for i in range(20):
        assert client.post(f"/signup/user{i}").status_code == 200

    assert len(smtp_server.messages) == 20
    assert len(smtp_server.sessions) == 1


def test_a_request_after_the_server_dropped_the_session(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """The idle session is gone; the next request still sends."""
    app = app_factory()
    mail = Mail(app)
    sending_app(app, mail)
    client = app.test_client()
    client.post("/signup/first")

    smtp_server.drop_sessions()
    smtp_server.wait_for_sessions_closed()
    response = client.post("/signup/second")

    assert response.status_code == 200
    assert [parsed(m)["Subject"] for m in smtp_server.messages] == [
        "welcome first",
        "welcome second",
    ]


def test_a_flask_mail_app_switches_by_its_import(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """Flask-Mail's Message, send, connect and send_message, unchanged, with an
    HTML part, an attachment and the default sender."""
    app = app_factory(MAIL_DEFAULT_SENDER=("Shop", "shop@example.test"))
    mail = Mail(app)
    attachment = bytes(range(256)) * 4

    with app.app_context():
        message = flask_mail.Message(
            "Your receipt",
            recipients=["buyer@example.test"],
            cc=["copy@example.test"],
            body="Thanks for your order.",
            html="<p>Thanks for your <b>order</b>.</p>",
        )
        message.attach("receipt.bin", "application/octet-stream", attachment)
        mail.send(message)
        with mail.connect() as conn:
            conn.send(flask_mail.Message("second", recipients=["b@example.test"]))
            conn.send_message("third", recipients=["c@example.test"], body="3")

    first, second, third = smtp_server.messages
    assert first.mail_from == "shop@example.test"
    assert set(first.rcpt_tos) == {"buyer@example.test", "copy@example.test"}
    received = parsed(first)
    assert received["From"] == "Shop <shop@example.test>"
    assert received["Subject"] == "Your receipt"
    html = received.get_body(preferencelist=("html",))
    assert html is not None
    assert "<b>order</b>" in html.get_content()
    (part,) = list(received.iter_attachments())
    assert part.get_filename() == "receipt.bin"
    assert part.get_content() == attachment
    assert received["Message-ID"] == message.msgId
    assert [parsed(m)["Subject"] for m in (second, third)] == ["second", "third"]
    assert len(smtp_server.sessions) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"extra_headers": {"X-A": "v\r\nBcc: victim@example.test"}},
        {"extra_headers": {"X-A\r\nX-Injected": "v"}},
        {"extra_headers": {"X-A": "v\x0bX-Injected : yes"}},
        {"subject": "hi\x0bX-Injected : yes"},
    ],
)
def test_flask_mail_headers_are_checked_before_sending(
    smtp_server: SMTPTestServer, app_factory: AppFactory, headers: dict[str, Any]
) -> None:
    """Flask-Mail checks a few headers, for CR and LF only; every header of the
    message it builds is checked before a byte is written."""
    app = app_factory()
    mail = Mail(app)

    with app.app_context(), pytest.raises(ValueError, match="line break"):
        mail.send(
            flask_mail.Message(recipients=["r@example.test"], body="b", **headers)
        )

    assert smtp_server.count("MAIL") == 0


def test_a_flask_mail_attachment_name_is_checked_before_sending(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """An attachment's file name is a header of its part, which Flask-Mail's
    own check does not look at."""
    app = app_factory()
    mail = Mail(app)

    with app.app_context():
        message = flask_mail.Message(recipients=["r@example.test"], body="b")
        message.attach("invoice.pdf\r\nINJECTED", "application/pdf", b"%PDF")
        with pytest.raises(ValueError, match="'Content-Disposition' header contains"):
            mail.send(message)

    assert smtp_server.count("MAIL") == 0


def test_flask_mailman_headers_are_checked_before_sending(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    app, _, mailman = with_mailman(app_factory)
    message = flask_mailman.EmailMessage(
        "hi\x0bX-Injected : yes", "b", "s@example.test", ["r@example.test"]
    )

    with app.app_context(), pytest.raises(ValueError, match="line break"):
        message.send()

    assert mailman is not None
    assert smtp_server.count("MAIL") == 0


def test_a_login_without_tls_names_the_flask_settings(app_factory: AppFactory) -> None:
    app = app_factory(MAIL_USERNAME="app", MAIL_PASSWORD="pw")

    with pytest.raises(
        ValueError, match="neither MAIL_USE_TLS nor MAIL_USE_SSL"
    ) as raised:
        Mail(app)

    assert "SMTPPOOL_ALLOW_UNENCRYPTED_AUTH = True" in str(raised.value)


def test_flask_mailman_messages_through_mail_send_and_the_backend(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """A Flask-Mailman message with an alternative and an attachment, sent by
    mail.send and by Flask-Mailman itself through MAIL_BACKEND."""
    app, mail, _ = with_mailman(app_factory)

    with app.app_context():
        built = flask_mailman.EmailMultiAlternatives(
            "mailman", "plain body", to=["to@example.test"], bcc=["hidden@example.test"]
        )
        built.attach_alternative("<p>html body</p>", "text/html")
        built.attach("data.txt", "attached text\n", "text/plain")
        mail.send(built)
        sent = flask_mailman.EmailMessage(
            "via backend", "body", to=["other@example.test"]
        ).send()

    assert sent == 1
    first, second = smtp_server.messages
    assert set(first.rcpt_tos) == {"to@example.test", "hidden@example.test"}
    received = parsed(first)
    assert received["Bcc"] is None
    assert received["From"] == "app@example.test"
    html = received.get_body(preferencelist=("html",))
    assert html is not None
    assert html.get_content().strip() == "<p>html body</p>"
    (part,) = list(received.iter_attachments())
    # Text travels with CRLF line ends (RFC 5321 section 2.3.8).
    content = part.get_content().replace("\r\n", "\n")
    assert (part.get_filename(), content) == ("data.txt", "attached text\n")
    assert parsed(second)["Subject"] == "via backend"
    assert len(smtp_server.sessions) == 1


def test_a_standard_message_gets_the_default_sender(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """email.message.EmailMessage without From: MAIL_DEFAULT_SENDER is used."""
    app = app_factory()
    mail = Mail(app)
    message = make_message()
    del message["From"]

    mail.send(message)

    assert smtp_server.messages[0].mail_from == "app@example.test"
    assert parsed(smtp_server.messages[0])["From"] == "app@example.test"


def test_suppressed_sending_opens_nothing_and_records(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """In testing mode nothing is sent and no session is opened, but
    record_messages sees every message."""
    app = app_factory(TESTING=True)
    mail = Mail(app)
    sending_app(app, mail)

    with mail.record_messages() as outbox:
        app.test_client().post("/signup/tester")
        mail.send(make_message("standard"))

    assert [m.subject if hasattr(m, "subject") else m["Subject"] for m in outbox] == [
        "welcome tester",
        "standard",
    ]
    assert smtp_server.sessions == []


def test_record_messages_also_records_real_sends(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """With sending on, the recorded messages also reach the server."""
    app = app_factory()
    mail = Mail(app)
    with mail.record_messages() as outbox:
        mail.send(make_message())

    assert len(outbox) == len(smtp_server.messages) == 1


@pytest.mark.parametrize(
    ("config", "sentence"),
    [
        ({"MAIL_USE_TLS": True, "MAIL_USE_SSL": True}, "both set"),
        ({"MAIL_PORT": "smtp"}, "MAIL_PORT must be a port number, got 'smtp'"),
        ({"MAIL_PORT": 70000}, "MAIL_PORT must be a port number"),
        ({"MAIL_USE_TLS": "maybe"}, "MAIL_USE_TLS must be true or false"),
        ({"MAIL_USERNAME": "app"}, "MAIL_PASSWORD is not set"),
        (
            {"MAIL_USERNAME": "app", "MAIL_PASSWORD": "pw"},
            "neither MAIL_USE_TLS nor MAIL_USE_SSL: the password would cross",
        ),
        ({"SMTPPOOL_MAX_SIZE": 0}, "max_size must be at least 1, got 0"),
        ({"SMTPPOOL_COLOUR": "blue"}, "SMTPPOOL_COLOUR is not a setting"),
        (
            {"MAIL_MAX_EMAILS": 5, "SMTPPOOL_MAX_MESSAGES": 5},
            "MAIL_MAX_EMAILS and SMTPPOOL_MAX_MESSAGES are both set",
        ),
        ({"MAIL_DEFAULT_SENDER": 42}, "MAIL_DEFAULT_SENDER must be an address"),
    ],
)
def test_bad_settings_fail_at_init_app(
    app_factory: AppFactory, config: dict[str, Any], sentence: str
) -> None:
    """One sentence, naming the key, before anything is sent."""
    app = app_factory(**config)
    with pytest.raises(ValueError, match=sentence):
        Mail().init_app(app)


def test_settings_are_read_as_flask_mail_reads_them(
    app_factory: AppFactory,
) -> None:
    """Text from the environment, Flask-Mail's flags and the pool's own keys."""
    app = app_factory(
        MAIL_PORT="2525",
        MAIL_USE_TLS="true",
        MAIL_USERNAME="app",
        MAIL_PASSWORD="secret",
        MAIL_MAX_EMAILS=7,
        MAIL_TIMEOUT=3,
        SMTPPOOL_MAX_SIZE=2,
    )
    mail = Mail(app)

    config = mail.pool.config
    assert (config.port, config.security, config.username) == (2525, "starttls", "app")
    assert (config.max_messages, config.timeout, config.max_size) == (7, 3, 2)
    assert "secret" not in repr(app.extensions["smtppool"].settings)


def test_a_thread_without_an_application_context(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """F14: a plain thread sends through the extension set up with Mail(app)."""
    app = app_factory()
    mail = Mail(app)
    with app.app_context():
        flask_message = flask_mail.Message("from a thread", recipients=["t@x.test"])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            assert not flask.has_app_context()
            mail.send(flask_message)
            mail.send(make_message())
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=10)

    assert errors == []
    assert len(smtp_server.messages) == 2


def test_two_apps_keep_two_pools(
    smtp_server_factory: Callable[..., SMTPTestServer], app_factory: AppFactory
) -> None:
    """An application factory, two apps for two servers, one Mail object."""
    first_server, second_server = smtp_server_factory(), smtp_server_factory()
    mail = Mail()
    first, second = app_factory(first_server), app_factory(second_server)
    mail.init_app(first)
    mail.init_app(second)

    with first.app_context():
        mail.send(make_message("to the first"))
        first_pool = mail.pool
    with second.app_context():
        mail.send(make_message("to the second"))
        second_pool = mail.pool

    assert first_pool is not second_pool
    assert [parsed(m)["Subject"] for m in first_server.messages] == ["to the first"]
    assert [parsed(m)["Subject"] for m in second_server.messages] == ["to the second"]
    with pytest.raises(RuntimeError, match="serves 2 applications"):
        mail.send(make_message())


def test_without_flask_the_import_names_the_extra() -> None:
    """Importing smtppool.flask where Flask is missing says what to install."""
    code = (
        "import sys; sys.modules['flask'] = None\n"
        "try:\n"
        "    import smtppool.flask\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'smtppool[flask]'" in result.stdout


def test_flask_mailman_connection_block_and_fail_silently(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """get_connection() as a block holds one session; fail_silently counts."""
    app, _, mailman = with_mailman(app_factory)
    smtp_server.on("MAIL", "550 5.7.1 not you", after=2, times=1)

    with app.app_context():
        messages = [
            flask_mailman.EmailMessage(f"m{i}", "body", to=["to@example.test"])
            for i in range(3)
        ]
        with mailman.get_connection() as conn:
            sent = conn.send_messages(messages[:2])
        quiet = mailman.get_connection(fail_silently=True).send_messages(messages[2:])

    assert (sent, quiet) == (2, 0)
    assert len(smtp_server.messages) == 2
    assert len(smtp_server.sessions) == 1


def test_the_pool_is_closed_at_interpreter_exit(smtp_server: SMTPTestServer) -> None:
    """A process that sent through the extension says QUIT as it exits."""
    code = (
        "import flask, email.message\n"
        "from smtppool.flask import Mail\n"
        "app = flask.Flask('exiting')\n"
        f"app.config.update(MAIL_SERVER={smtp_server.host!r}, "
        f"MAIL_PORT={smtp_server.port}, MAIL_DEFAULT_SENDER='a@example.test')\n"
        "msg = email.message.EmailMessage()\n"
        "msg['To'], msg['Subject'] = 'b@example.test', 'bye'\n"
        "msg.set_content('last words')\n"
        "Mail(app).send(msg)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: S603

    smtp_server.wait_for_sessions_closed()
    assert smtp_server.sessions[0].commands[-1] == "QUIT"
    assert len(smtp_server.messages) == 1


def test_subclassed_messages_are_sent(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """Apps subclass both libraries' message classes."""

    class Receipt(flask_mail.Message):
        pass

    class Notice(flask_mailman.EmailMessage):
        pass

    app, mail, _ = with_mailman(app_factory)
    with app.app_context():
        mail.send(Receipt("receipt", recipients=["a@example.test"]))
        Notice("notice", "body", to=["b@example.test"]).send()

    assert [parsed(m)["Subject"] for m in smtp_server.messages] == ["receipt", "notice"]


def test_a_connection_sends_only_inside_its_block(app_factory: AppFactory) -> None:
    """Outside the block nothing could be sent, so it says so instead."""
    mail = Mail(app_factory())
    conn = mail.connect()
    with pytest.raises(SMTPPoolError, match="inside its block"):
        conn.send(make_message())
    with conn:
        pass
    with pytest.raises(SMTPPoolError, match="inside its block"):
        conn.send(make_message())


def test_code_written_for_flask_mail_keeps_working(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """extensions["mail"].send, the settings attributes, the app given to Mail
    over the current one, and subscribers of Flask-Mail's signal."""
    app, other = app_factory(), app_factory()
    mail = Mail(app)
    seen: list[Any] = []

    def subscriber(sender: flask.Flask, message: Any) -> None:
        seen.append(message)

    with flask_mail.email_dispatched.connected_to(subscriber), app.app_context():
        flask.current_app.extensions["mail"].send(
            flask_mail.Message("via extensions", recipients=["a@example.test"])
        )
        with other.app_context():
            mail.send(make_message("from inside another app's context"))

    assert (mail.default_sender, mail.suppress, mail.port) == (
        "app@example.test",
        False,
        smtp_server.port,
    )
    assert len(smtp_server.messages) == 2
    # Flask-Mail's subscribers hear of Flask-Mail's messages only.
    assert [m.subject for m in seen] == ["via extensions"]


def test_unset_environment_variables_take_the_defaults(
    app_factory: AppFactory,
) -> None:
    """os.environ.get() gives None for what is not set."""
    app = app_factory(
        MAIL_SERVER=None, MAIL_PORT=None, MAIL_USE_TLS=None, MAIL_SUPPRESS_SEND=None
    )
    config = Mail(app).pool.config

    assert (config.host, config.port, config.security) == ("127.0.0.1", 25, "none")


@pytest.mark.parametrize(
    ("config", "sentence"),
    [
        ({"MAIL_MAX_EMAILS": 0}, "MAIL_MAX_EMAILS: max_messages must be at least 1"),
        ({"MAIL_TIMEOUT": "soon"}, "MAIL_TIMEOUT: timeout must be a number"),
        ({"SMTPPOOL_SOURCE_ADDRESS": ["127.0.0.1", 0]}, "SMTPPOOL_SOURCE_ADDRESS: "),
        ({"MAIL_SERVER": "  "}, "MAIL_SERVER must be a host name or address"),
        ({"MAIL_PORT": "²"}, "MAIL_PORT must be a port number"),
        (
            {"MAIL_USERNAME": "ü", "MAIL_PASSWORD": "pw", "MAIL_USE_TLS": True},
            "MAIL_USERNAME: username",
        ),
    ],
)
def test_pool_setting_errors_name_the_key(
    app_factory: AppFactory, config: dict[str, Any], sentence: str
) -> None:
    """The pool's own checks, reported under the key that was set."""
    with pytest.raises(ValueError, match=re.escape(sentence)):
        Mail(app_factory(**config))


def test_numbers_may_be_text(app_factory: AppFactory) -> None:
    """Numbers from the environment arrive as text."""
    app = app_factory(MAIL_TIMEOUT="2.5", MAIL_MAX_EMAILS="50", SMTPPOOL_MAX_SIZE="3")
    config = Mail(app).pool.config

    assert (config.timeout, config.max_messages, config.max_size) == (2.5, 50, 3)


def test_flags_may_be_text(app_factory: AppFactory) -> None:
    app = app_factory(
        SMTPPOOL_PIPELINING="off",
        SMTPPOOL_CHUNKING=False,
        MAIL_USERNAME="app",
        MAIL_PASSWORD="pw",
        SMTPPOOL_ALLOW_UNENCRYPTED_AUTH="yes",
    )
    config = Mail(app).pool.config

    assert (config.pipelining, config.chunking) == (False, False)
    assert config.allow_unencrypted_auth
    with pytest.raises(ValueError, match="SMTPPOOL_CHUNKING must be true or false"):
        Mail(app_factory(SMTPPOOL_CHUNKING="sometimes"))


def test_a_discarded_app_closes_its_pool(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """Apps built and dropped (one per test, say) do not keep sessions open."""
    mail = Mail()
    app = flask.Flask("short-lived")
    app.config.update(MAIL_SERVER=smtp_server.host, MAIL_PORT=smtp_server.port)
    mail.init_app(app)
    mail.init_app(app)  # a second time replaces the first
    with app.app_context():
        mail.send(make_message())
    del app
    gc.collect()

    smtp_server.wait_for_sessions_closed()
    assert smtp_server.sessions[0].commands[-1] == "QUIT"
    with pytest.raises(RuntimeError, match="init_app"):
        mail.send(make_message())


def test_the_default_sender_reaches_the_from_header(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """For messages of both libraries built without a sender."""
    app = app_factory()
    mail = Mail(app)
    flask_mailman.Mail(app)
    with app.app_context():
        flask_mail_message = flask_mail.Message("a", recipients=["a@example.test"])
        flask_mail_message.sender = None
        mailman_message = flask_mailman.EmailMessage("b", "b", to=["b@example.test"])
        mailman_message.from_email = None
        mail.send(flask_mail_message)
        mail.send(mailman_message)

    assert [parsed(m)["From"] for m in smtp_server.messages] == [
        "app@example.test",
        "app@example.test",
    ]


def test_a_flask_mailman_message_without_flask_mailman_set_up(
    app_factory: AppFactory,
) -> None:
    """One sentence saying what to set up."""
    app = app_factory()
    mail = Mail(app)
    with app.app_context():
        message = flask_mailman.EmailMessage(
            "x", "x", "app@example.test", ["x@example.test"]
        )
    with pytest.raises(RuntimeError, match=re.escape("flask_mailman.Mail(app)")):
        mail.send(message)


def test_the_backend_fails_silently_when_asked_and_takes_no_credentials(
    smtp_server_factory: Callable[..., SMTPTestServer], app_factory: AppFactory
) -> None:
    """A server that is down: 0 with fail_silently; per-call login refused."""
    server = smtp_server_factory()
    app, _, mailman = with_mailman(app_factory, server)
    server.stop()

    with app.app_context():
        quiet = mailman.send_mail(
            "s", "b", None, ["to@example.test"], fail_silently=True
        )
        with pytest.raises(TypeError, match="takes no password, username"):
            mailman.get_connection(username="other", password="secret")

    assert quiet == 0


def test_one_backend_shared_by_threads(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """Flask-Mailman lets threads share a connection object."""
    app, _, mailman = with_mailman(app_factory)
    with app.app_context():
        backend = mailman.get_connection()
        messages = [
            flask_mailman.EmailMessage(f"m{i}", "b", to=["to@example.test"])
            for i in range(16)
        ]

    def send(message: Any) -> int:
        with app.app_context():
            return int(backend.send_messages([message]))

    with ThreadPoolExecutor(max_workers=8) as executor:
        counts = list(executor.map(send, messages))

    assert sum(counts) == len(smtp_server.messages) == 16


def test_settings_changed_at_run_time(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """suppress and default_sender are read at each send; the others refuse a
    new value instead of ignoring it."""
    app = app_factory()
    Mail(app)
    state = app.extensions["mail"]
    state.suppress = True
    state.send(make_message())
    state.suppress = False
    state.default_sender = "changed@example.test"
    message = make_message()
    del message["From"]
    state.send(message)

    assert [m.mail_from for m in smtp_server.messages] == ["changed@example.test"]
    with pytest.raises(AttributeError):
        state.server = "elsewhere.example.test"


def test_mail_attributes_before_init_app_and_typos() -> None:
    """getattr with a default works as with Flask-Mail; a typo stays an error."""
    mail = Mail()
    assert getattr(mail, "default_sender", None) is None
    with pytest.raises(AttributeError):
        mail.defualt_sender  # noqa: B018 - the attribute access is the test


def test_the_app_given_to_mail_wins_for_message_settings(
    smtp_server: SMTPTestServer, app_factory: AppFactory
) -> None:
    """Inside another app's context, Mail(app) still prepares messages with app."""
    app, other = app_factory(), app_factory()
    mail = Mail(app)
    flask_mailman.Mail(app)
    with app.app_context():
        message = flask_mailman.EmailMessage("x", "x", to=["x@example.test"])
    with other.app_context():
        mail.send(message)
        mail.send_message("y", recipients=["y@example.test"])

    assert len(smtp_server.messages) == 2


def test_the_backend_fails_silently_in_a_block_too(
    smtp_server_factory: Callable[..., SMTPTestServer], app_factory: AppFactory
) -> None:
    """with get_connection(fail_silently=True): nothing raised, nothing sent."""
    server = smtp_server_factory()
    app, _, mailman = with_mailman(app_factory, server)
    server.stop()

    with app.app_context():
        message = flask_mailman.EmailMessage("x", "x", to=["x@example.test"])
        with mailman.get_connection(fail_silently=True) as connection:
            sent = connection.send_messages([message])

    assert sent == 0
