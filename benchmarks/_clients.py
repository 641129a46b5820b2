"""The Python contenders, as the worker process drives them.

Each sends the same message content: From, To, Subject and a one-line body from
``smtppool.testing.demo.build_message``. smtppool and smtplib send that
``email.message.EmailMessage``; Django and Flask-Mail build their own message
class from the same fields (and Message-ID), since that is what their users write.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading

import attrs

import smtppool
from smtppool.testing.demo import build_message

from ._sinks import Target

# What smtppool and smtplib (and Nodemailer) say in EHLO, so that none looks up the
# machine's name; Django and Flask-Mail say that name, as they do in use.
CLIENT_NAME = "bench.example.test"


class Client:
    """One contender in one worker process; the harness calls ``warm`` once, then
    ``start_thread``, ``send`` and ``stop_thread`` from each sending thread."""

    def __init__(
        self, target: Target, threads: int, options: dict[str, object], warm_up: int
    ):
        self.target = target
        self.threads = threads
        self.options = options
        # Messages to send on each kept-open connection before the clock starts.
        self.warm_up = warm_up

    def warm(self) -> None:
        """Send one message, so that imports and settings are not timed. A
        contender that opens a session per message keeps none to warm."""
        self.send(-1)

    def start_thread(self) -> None:
        pass

    def send(self, n: int) -> None:
        raise NotImplementedError

    def stop_thread(self) -> None:
        pass

    def close(self) -> None:
        pass


def client_context(target: Target) -> ssl.SSLContext | None:
    """A verifying context that trusts the benchmark's CA, for STARTTLS."""
    if not target.tls:
        return None
    return ssl.create_default_context(cafile=target.ca_file)


class Pooled(Client):
    """``SMTPPool.send_message`` from every thread, max_size = threads."""

    def __init__(
        self, target: Target, threads: int, options: dict[str, object], warm_up: int
    ):
        super().__init__(target, threads, options, warm_up)
        self.pool = smtppool.SMTPPool(
            target.host,
            target.port,
            security="starttls" if target.tls else "none",
            username=target.username,
            password=target.password,
            ssl_context=client_context(target),
            local_hostname=CLIENT_NAME,
            max_size=threads,
            **options,  # type: ignore[arg-type]
        )

    def warm(self) -> None:
        # Hold every slot at once, so that all max_size sessions get opened.
        with contextlib.ExitStack() as stack:
            connections = [
                stack.enter_context(self.pool.connection()) for _ in range(self.threads)
            ]
            for conn in connections:
                for n in range(self.warm_up):
                    conn.send_message(build_message(-1 - n))

    def send(self, n: int) -> None:
        self.pool.send_message(build_message(n))

    def close(self) -> None:
        self.pool.close()


class Persistent(Client):
    """One ``smtplib.SMTP`` per thread: connect (and log in) once, send, quit."""

    def __init__(
        self, target: Target, threads: int, options: dict[str, object], warm_up: int
    ):
        super().__init__(target, threads, options, warm_up)
        self.local = threading.local()

    def warm(self) -> None:
        pass  # each thread connects in start_thread, before the clock starts

    def start_thread(self) -> None:
        smtp = smtplib.SMTP(self.target.host, self.target.port, CLIENT_NAME)
        if self.target.tls:
            smtp.starttls(context=client_context(self.target))
            smtp.login(self.target.username or "", self.target.password or "")
        for n in range(self.warm_up):
            smtp.send_message(build_message(-1 - n))
        self.local.smtp = smtp

    def send(self, n: int) -> None:
        self.local.smtp.send_message(build_message(n))

    def stop_thread(self) -> None:
        self.local.smtp.quit()


class Django(Client):
    """Django's own SMTP backend: a new session for every ``message.send()``.

    It verifies the server with ``ssl.create_default_context()``, which trusts
    what ``SSL_CERT_FILE`` names: the worker is started with it set to the CA.
    """

    def __init__(
        self, target: Target, threads: int, options: dict[str, object], warm_up: int
    ):
        super().__init__(target, threads, options, warm_up)
        import django  # noqa: PLC0415
        from django.conf import settings  # noqa: PLC0415

        settings.configure(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=target.host,
            EMAIL_PORT=target.port,
            EMAIL_USE_TLS=target.tls,
            EMAIL_HOST_USER=target.username or "",
            EMAIL_HOST_PASSWORD=target.password or "",
        )
        django.setup()

    def send(self, n: int) -> None:
        from django.core.mail import EmailMessage  # noqa: PLC0415

        fields = _fields(n)
        EmailMessage(
            fields.subject,
            fields.body,
            fields.sender,
            [fields.recipient],
            headers={"Message-ID": fields.message_id},
        ).send()


class FlaskMail(Client):
    """Flask-Mail: a new session for every ``mail.send()``, in an app context.

    Flask-Mail calls ``starttls()`` with no context, so smtplib does not verify
    the server's certificate at all; nothing needs to trust the CA.
    """

    def __init__(
        self, target: Target, threads: int, options: dict[str, object], warm_up: int
    ):
        super().__init__(target, threads, options, warm_up)
        import flask  # noqa: PLC0415
        import flask_mail  # noqa: PLC0415

        self.app = flask.Flask("bench")
        self.app.config.update(
            MAIL_SERVER=target.host,
            MAIL_PORT=target.port,
            MAIL_USE_TLS=target.tls,
            MAIL_USERNAME=target.username,
            MAIL_PASSWORD=target.password,
        )
        self.mail = flask_mail.Mail(self.app)
        self.message_class = flask_mail.Message

    def send(self, n: int) -> None:
        fields = _fields(n)
        message = self.message_class(
            fields.subject,
            [fields.recipient],
            fields.body,
            sender=fields.sender,
            extra_headers={"Message-ID": fields.message_id},
        )
        with self.app.app_context():
            self.mail.send(message)


@attrs.frozen
class _Fields:
    sender: str
    recipient: str
    subject: str
    body: str
    message_id: str


def _fields(n: int) -> _Fields:
    """The fields of build_message(n), for frameworks with their own message."""
    source = build_message(n)
    return _Fields(
        sender=source["From"],
        recipient=source["To"],
        subject=source["Subject"],
        body=source.get_content(),
        message_id=source["Message-ID"],
    )


CLIENTS: dict[str, type[Client]] = {
    "pooled": Pooled,
    "persistent": Persistent,
    "django": Django,
    "flask-mail": FlaskMail,
}
