"""Flask integration: one pool per application, a drop-in for Flask-Mail.

    from smtppool.flask import Mail

    mail = Mail(app)  # or mail = Mail(); mail.init_app(app)
    mail.send(message)

``message`` may be a ``flask_mail.Message``, a ``flask_mailman.EmailMessage`` or a
standard ``email.message.EmailMessage``. Flask-Mailman users can instead set
``MAIL_BACKEND = "smtppool.flask.EmailBackend"``.
"""

from __future__ import annotations

import atexit
import contextlib
import email.message
import email.utils
import smtplib
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

try:
    import blinker
    import flask
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "smtppool.flask needs Flask: pip install 'smtppool[flask]'"
    ) from exc

import attrs
from typing_extensions import Self

from . import _config
from ._connection import Connection as PoolConnection
from ._pool import SMTPPool
from ._session import Refused

__all__ = ["Connection", "EmailBackend", "Mail", "MailSettings", "email_dispatched"]

# Where the extension keeps its state in ``app.extensions``.
EXTENSION = "smtppool"

_signals = blinker.Namespace()
email_dispatched = _signals.signal(
    "email-dispatched",
    doc="Sent with ``message=`` for every message sent or suppressed.",
)

# SMTPPool settings that an SMTPPOOL_<NAME> key may set. The others come from the
# MAIL_* keys, which Flask-Mail users already have.
_POOL_KEYS = (
    "max_size",
    "acquire_timeout",
    "max_idle",
    "max_lifetime",
    "max_messages",
    "validate_after",
    "retries",
    "rate_limit",
    "rate_period",
    "leak_threshold",
    "local_hostname",
    "source_address",
    "ssl_context",
    "name",
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@attrs.frozen(kw_only=True)
class MailSettings:
    """The application's mail settings, read and checked once by ``init_app``."""

    server: str
    port: int
    security: _config.Security
    username: str | None
    password: str | None = attrs.field(repr=False)
    default_sender: str | None
    suppress: bool
    ascii_attachments: bool
    pool_options: Mapping[str, Any]

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, testing: bool) -> Self:
        """Read Flask-Mail's keys (with its defaults) and ``SMTPPOOL_*`` keys.

        Raises:
            ValueError: A value is invalid or contradicts another, in one sentence
                that names the key.
        """
        use_tls = _flag(config, "MAIL_USE_TLS")
        use_ssl = _flag(config, "MAIL_USE_SSL")
        if use_tls and use_ssl:
            raise ValueError(
                "MAIL_USE_TLS and MAIL_USE_SSL are both set: use MAIL_USE_SSL for "
                "implicit TLS (port 465) or MAIL_USE_TLS for STARTTLS, not both"
            )
        # As in Flask-Mail, neither flag means a clear-text session.
        security: _config.Security = "none"
        if use_ssl:
            security = "ssl"
        elif use_tls:
            security = "starttls"

        username = config.get("MAIL_USERNAME") or None
        password = config.get("MAIL_PASSWORD") or None
        if (username is None) != (password is None):
            missing = "MAIL_PASSWORD" if password is None else "MAIL_USERNAME"
            raise ValueError(
                f"{missing} is not set but the other login setting is; set both "
                "MAIL_USERNAME and MAIL_PASSWORD, or neither"
            )

        settings = cls(
            server=_text(config, "MAIL_SERVER", "127.0.0.1"),
            port=_port(config),
            security=security,
            username=username,
            password=password,
            default_sender=_sender(config),
            suppress=_flag(config, "MAIL_SUPPRESS_SEND", default=testing),
            ascii_attachments=_flag(config, "MAIL_ASCII_ATTACHMENTS"),
            pool_options=_pool_options(config),
        )
        settings.pool_settings()  # every value checked now, not at the first send
        return settings

    def pool_settings(self) -> _config.PoolConfig:
        """The pool's settings, checked by the pool's own rules."""
        options = dict(self.pool_options)
        name = options.pop("name", None) or f"{self.server}:{self.port}"
        try:
            return _config.PoolConfig(
                host=self.server,
                port=self.port,
                security=self.security,
                username=self.username,
                password=self.password,
                name=name,
                **options,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid mail setting: {exc}") from None

    def new_pool(self) -> SMTPPool:
        settings = self.pool_settings()
        options = {
            field.name: getattr(settings, field.name)
            for field in attrs.fields(_config.PoolConfig)
            if field.name not in ("host", "port")
        }
        return SMTPPool(settings.host, settings.port, **options)


def _flag(config: Mapping[str, Any], key: str, *, default: bool = False) -> bool:
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _text(config: Mapping[str, Any], key: str, default: str) -> str:
    value = config.get(key) or default
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def _port(config: Mapping[str, Any]) -> int:
    value = config.get("MAIL_PORT", 25)
    # Ports often arrive as text from the environment, which Flask-Mail accepts.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"MAIL_PORT must be a port number, got {value!r}")
    return value


def _sender(config: Mapping[str, Any]) -> str | None:
    value = config.get("MAIL_DEFAULT_SENDER")
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, tuple | list) and len(value) == 2:
        return email.utils.formataddr((str(value[0]), str(value[1])))
    raise ValueError(
        f"MAIL_DEFAULT_SENDER must be an address or a (name, address) pair, "
        f"got {value!r}"
    )


def _pool_options(config: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in config.items():
        if not key.startswith("SMTPPOOL_"):
            continue
        name = key.removeprefix("SMTPPOOL_").lower()
        if name not in _POOL_KEYS:
            known = ", ".join(f"SMTPPOOL_{known.upper()}" for known in _POOL_KEYS)
            raise ValueError(
                f"{key} is not a setting smtppool knows; use one of {known}"
            )
        options[name] = value

    if config.get("MAIL_MAX_EMAILS") is not None:
        if "max_messages" in options:
            raise ValueError(
                "MAIL_MAX_EMAILS and SMTPPOOL_MAX_MESSAGES are both set; keep one"
            )
        options["max_messages"] = config["MAIL_MAX_EMAILS"]
    if config.get("MAIL_TIMEOUT") is not None:
        options["timeout"] = config["MAIL_TIMEOUT"]
    return options


class _State:
    """What the extension keeps for one application, in ``app.extensions``.

    ``default_sender`` and ``ascii_attachments`` are read by Flask-Mail's
    ``Message``, which finds this object under ``app.extensions["mail"]``.
    """

    def __init__(self, app: flask.Flask, settings: MailSettings) -> None:
        self.app = app
        self.settings = settings
        self.default_sender = settings.default_sender
        self.ascii_attachments = settings.ascii_attachments
        self._pool: SMTPPool | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> SMTPPool:
        """The application's pool, built on first use."""
        pool = self._pool
        if pool is not None:
            return pool

        with self._lock:
            if self._pool is None:
                self._pool = self.settings.new_pool()
                atexit.register(self._pool.close)
            return self._pool

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """This application's context, pushed unless one is active already:
        Flask-Mail's and Flask-Mailman's messages read the app's settings."""
        if flask.has_app_context():
            yield
        else:
            with self.app.app_context():
                yield


class Connection:
    """A pooled session for a ``with`` block, as Flask-Mail's ``mail.connect()``.

    Each message is sent on the block's session; when the session is lost before
    the server can have accepted a message, smtppool sends it on a fresh one.
    """

    def __init__(self, state: _State) -> None:
        self._state = state
        self._lease: PoolConnection | None = None

    def __enter__(self) -> Self:
        if not self._state.settings.suppress:
            self._lease = self._state.pool.connection().__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.__exit__(exc_type, exc, traceback)

    def send(self, message: Any, envelope_from: str | None = None) -> Refused:
        """Send a Flask-Mail, Flask-Mailman or standard message.

        Returns:
            The recipients the server refused while it accepted others.
        """
        state = self._state
        with state.context():
            refused = self._send(message, envelope_from)
            email_dispatched.send(state.app, message=message)
        return refused

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a ``flask_mail.Message`` from the arguments and send it."""
        from flask_mail import Message  # noqa: PLC0415 - Flask-Mail is optional

        with self._state.context():
            message = Message(*args, **kwargs)
        return self.send(message)

    def _send(self, message: Any, envelope_from: str | None) -> Refused:
        default = self._state.default_sender
        if isinstance(message, email.message.Message):
            if message["From"] is None:
                if default is None:
                    raise ValueError(_NO_SENDER)
                message["From"] = default
            return self._deliver_standard(message, envelope_from)

        kind = type(message).__module__.split(".")[0]
        if kind == "flask_mail":
            return self._deliver_flask_mail(message, envelope_from)
        if kind == "flask_mailman":
            return self._deliver_flask_mailman(message, envelope_from)
        raise TypeError(
            "send() takes a flask_mail.Message, a flask_mailman.EmailMessage or an "
            f"email.message.EmailMessage, not {type(message).__name__}"
        )

    def _deliver_standard(
        self, message: email.message.Message, envelope_from: str | None
    ) -> Refused:
        if self._lease is None:
            return {}
        return self._lease.send_message(message, from_addr=envelope_from)

    def _deliver_flask_mail(self, message: Any, envelope_from: str | None) -> Refused:
        from flask_mail import (  # noqa: PLC0415 - Flask-Mail is optional
            BadHeaderError,
            sanitize_address,
            sanitize_addresses,
        )

        sender = envelope_from or message.sender or self._state.default_sender
        if not sender:
            raise ValueError(_NO_SENDER)
        if not message.send_to:
            raise ValueError("the message has no recipients")
        if message.has_bad_headers():
            raise BadHeaderError
        if message.date is None:
            message.date = time.time()

        if self._lease is None:
            return {}
        return self._lease.sendmail(
            sanitize_address(sender),
            list(sanitize_addresses(message.send_to)),
            message.as_bytes(),
            message.mail_options,
            message.rcpt_options,
        )

    def _deliver_flask_mailman(
        self, message: Any, envelope_from: str | None
    ) -> Refused:
        from flask_mailman.message import sanitize_address  # noqa: PLC0415

        recipients = message.recipients()
        if not recipients:
            raise ValueError("the message has no recipients")
        sender = envelope_from or message.from_email or self._state.default_sender
        if not sender:
            raise ValueError(_NO_SENDER)
        encoding = message.encoding or "utf-8"

        if self._lease is None:
            return {}
        return self._lease.sendmail(
            sanitize_address(sender, encoding),
            [sanitize_address(address, encoding) for address in recipients],
            message.message().as_bytes(linesep="\r\n"),
        )


_NO_SENDER = "the message has no sender and MAIL_DEFAULT_SENDER is not set; give it one"


class Mail:
    """The Flask extension: ``Mail(app)``, or ``Mail()`` and ``init_app(app)``.

    Each application gets one pool per process, built on first use and closed at
    interpreter exit. Sending works from any thread; outside an application
    context the application given to ``Mail(app)`` or ``init_app`` is used.
    """

    def __init__(self, app: flask.Flask | None = None) -> None:
        self.app = app
        self._states: list[_State] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Read and check the application's mail settings.

        Raises:
            ValueError: A setting is invalid, in one sentence naming its key.
        """
        settings = MailSettings.from_config(app.config, testing=app.testing)
        state = _State(app, settings)
        app.extensions[EXTENSION] = state
        # Flask-Mail's Message looks up the default sender here.
        app.extensions.setdefault("mail", state)
        self._states.append(state)

    @property
    def pool(self) -> SMTPPool:
        """The underlying pool of the current (or only) application."""
        return self._state().pool

    def connect(self) -> Connection:
        """A pooled session for a ``with`` block: ``with mail.connect() as conn:``."""
        return Connection(self._state())

    def send(self, message: Any) -> Refused:
        """Send one message on a session borrowed for the call."""
        with self.connect() as connection:
            return connection.send(message)

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a ``flask_mail.Message`` from the arguments and send it."""
        with self.connect() as connection:
            return connection.send_message(*args, **kwargs)

    @contextlib.contextmanager
    def record_messages(self) -> Iterator[list[Any]]:
        """Collect the messages sent (or suppressed) inside the block."""
        outbox: list[Any] = []

        def record(app: flask.Flask, message: Any) -> None:
            outbox.append(message)

        with email_dispatched.connected_to(record):
            yield outbox

    def _state(self) -> _State:
        if flask.has_app_context():
            state = flask.current_app.extensions.get(EXTENSION)
            if isinstance(state, _State):
                return state
            raise RuntimeError(
                "this application was not set up with smtppool's Mail; call "
                "mail.init_app(app) first"
            )
        if len(self._states) == 1:
            return self._states[0]
        if not self._states:
            raise RuntimeError("call mail.init_app(app) before sending")
        raise RuntimeError(
            f"this Mail serves {len(self._states)} applications and no application "
            "context is active; send inside 'with app.app_context():'"
        )


def _state_for(app: flask.Flask) -> _State:
    state = app.extensions.get(EXTENSION)
    if not isinstance(state, _State):
        raise RuntimeError(
            "smtppool.flask.EmailBackend needs the application set up with "
            "smtppool's Mail: call Mail(app) or mail.init_app(app)"
        )
    return state


try:
    from flask_mailman.backends.base import BaseEmailBackend
except ImportError:  # Flask-Mailman is optional
    EmailBackend: Any = None
else:

    class EmailBackend(BaseEmailBackend):  # type: ignore[misc,no-redef]
        """A Flask-Mailman backend that sends through the application's pool:
        ``MAIL_BACKEND = "smtppool.flask.EmailBackend"``.

        ``open()`` borrows one pooled session until ``close()``; without it each
        ``send_messages()`` call borrows one for its messages.
        """

        def __init__(
            self, mailman: Any = None, fail_silently: bool = False, **kwargs: Any
        ) -> None:
            super().__init__(mailman=mailman, fail_silently=fail_silently)
            self._state = _state_for(flask.current_app)
            self._connection: Connection | None = None

        def open(self) -> bool:
            if self._connection is not None:
                return False
            self._connection = Connection(self._state).__enter__()
            return True

        def close(self) -> None:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.__exit__(None, None, None)

        def send_messages(self, email_messages: list[Any]) -> int:
            if not email_messages:
                return 0
            opened = self.open()
            connection = self._connection
            try:
                return sum(self._send_one(connection, m) for m in email_messages)
            finally:
                if opened:
                    self.close()

        def _send_one(self, connection: Any, message: Any) -> int:
            if not message.recipients():
                return 0
            try:
                connection.send(message)
            except (smtplib.SMTPException, OSError):
                if not self.fail_silently:
                    raise
                return 0
            return 1
