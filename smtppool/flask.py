"""Flask integration: one pool per application, a drop-in for Flask-Mail.

    from smtppool.flask import Mail

    mail = Mail(app)  # or mail = Mail(); mail.init_app(app)
    mail.send(message)

``message`` may be a ``flask_mail.Message``, a ``flask_mailman.EmailMessage`` or a
standard ``email.message.EmailMessage``. Flask-Mailman users can instead set
``MAIL_BACKEND = "smtppool.flask.EmailBackend"``.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import os
import re
import smtplib
import sys
import threading
import time
import weakref
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
from ._smtp import check_headers
from .exceptions import SMTPPoolError

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
    "allow_unencrypted_auth",
    "pipelining",
    "chunking",
    "local_hostname",
    "source_address",
    "ssl_context",
    "name",
)

# Settings that take true or false, which may arrive as text from the environment.
_FLAGS = frozenset({"allow_unencrypted_auth", "pipelining", "chunking"})

# Settings that take a number, which may arrive as text likewise.
_NUMBERS = (
    frozenset(_POOL_KEYS).union({"timeout"})
    - _FLAGS
    - {
        "local_hostname",
        "source_address",
        "ssl_context",
        "name",
    }
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@attrs.frozen(kw_only=True)
class MailSettings:
    """The application's mail settings, read and checked once by ``init_app``.

    A key that is missing, or set to None (an unset environment variable read
    with ``os.environ.get``), takes its default.
    """

    server: str
    port: int
    security: _config.Security
    username: str | None
    password: str | None = attrs.field(repr=False)
    default_sender: str | None
    suppress: bool
    ascii_attachments: bool
    pool_options: Mapping[str, Any]
    # The configuration key each pool option came from, for error messages.
    pool_keys: Mapping[str, str]

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

        options, keys = _pool_options(config)
        if (
            username is not None
            and security == "none"
            and not options.get("allow_unencrypted_auth")
        ):
            raise ValueError(
                "MAIL_USERNAME and MAIL_PASSWORD are set but neither MAIL_USE_TLS "
                "nor MAIL_USE_SSL: the password would cross the network "
                "unencrypted. Set MAIL_USE_TLS (STARTTLS, port 587) or MAIL_USE_SSL "
                "(port 465), or SMTPPOOL_ALLOW_UNENCRYPTED_AUTH = True for a relay "
                "you trust on a network you trust"
            )
        settings = cls(
            server=_server(config),
            port=_port(config),
            security=security,
            username=username,
            password=password,
            default_sender=_sender(config),
            suppress=_flag(config, "MAIL_SUPPRESS_SEND", default=testing),
            ascii_attachments=_flag(config, "MAIL_ASCII_ATTACHMENTS"),
            pool_options=options,
            pool_keys=keys,
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
            # The pool's message starts with its own name for the setting.
            field = str(exc).split(" ", 1)[0]
            keys = {
                "host": "MAIL_SERVER",
                "username": "MAIL_USERNAME",
                "password": "MAIL_PASSWORD",
                **self.pool_keys,
            }
            raise ValueError(f"{keys.get(field, 'mail setting')}: {exc}") from None

    def new_pool(self) -> SMTPPool:
        settings = self.pool_settings()
        options = {
            field.name: getattr(settings, field.name)
            for field in attrs.fields(_config.PoolConfig)
            if field.name not in ("host", "port")
        }
        return SMTPPool(settings.host, settings.port, **options)


def _flag(config: Mapping[str, Any], key: str, *, default: bool = False) -> bool:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _server(config: Mapping[str, Any]) -> str:
    value = config.get("MAIL_SERVER")
    if value is None:
        return "127.0.0.1"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"MAIL_SERVER must be a host name or address, got {value!r}")
    return value


def _port(config: Mapping[str, Any]) -> int:
    value = _number(config.get("MAIL_PORT"))
    if value is None:
        return 25
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"MAIL_PORT must be a port number, got {value!r}")
    return value


def _number(value: Any) -> Any:
    """A number written as text (from the environment) as a number; else as is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[0-9]*\.[0-9]+|[0-9]+\.[0-9]*", text):
        return float(text)
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


def _pool_options(
    config: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    """The pool's options from SMTPPOOL_*, MAIL_MAX_EMAILS and MAIL_TIMEOUT, and
    the key each came from."""
    options: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in config.items():
        if not key.startswith("SMTPPOOL_") or value is None:
            continue
        name = key.removeprefix("SMTPPOOL_").lower()
        if name not in _POOL_KEYS:
            known = ", ".join(f"SMTPPOOL_{known.upper()}" for known in _POOL_KEYS)
            raise ValueError(
                f"{key} is not a setting smtppool knows; use one of {known}"
            )
        options[name], keys[name] = value, key

    for key, name in (("MAIL_MAX_EMAILS", "max_messages"), ("MAIL_TIMEOUT", "timeout")):
        if config.get(key) is None:
            continue
        if name in options:
            raise ValueError(f"{key} and {keys[name]} are both set; keep one")
        options[name], keys[name] = config[key], key

    for name in options.keys() & _NUMBERS:
        options[name] = _number(options[name])
    for name in options.keys() & _FLAGS:
        options[name] = _flag({keys[name]: options[name]}, keys[name])
    return options, keys


class _State:
    """What the extension keeps for one application, in ``app.extensions``.

    It also stands in ``app.extensions["mail"]`` for code written for Flask-Mail:
    it has Flask-Mail's attributes (``server``, ``default_sender``, ``suppress``,
    ...) and its ``send``, ``send_message`` and ``connect``.
    """

    def __init__(self, app: flask.Flask, settings: MailSettings) -> None:
        self._app = weakref.ref(app)
        self.settings = settings
        # Flask-Mail's two settings that code changes at run time; both are read
        # at each send. The others are read-only properties below.
        self.default_sender = settings.default_sender
        self.suppress = settings.suppress
        self._pool: SMTPPool | None = None
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    server = property(lambda self: self.settings.server)
    port = property(lambda self: self.settings.port)
    username = property(lambda self: self.settings.username)
    password = property(lambda self: self.settings.password)
    use_tls = property(lambda self: self.settings.security == "starttls")
    use_ssl = property(lambda self: self.settings.security == "ssl")
    max_emails = property(lambda self: self.settings.pool_options.get("max_messages"))
    ascii_attachments = property(lambda self: self.settings.ascii_attachments)
    debug = property(lambda self: 0)

    @property
    def app(self) -> flask.Flask:
        app = self._app()
        if app is None:
            raise RuntimeError("the application this mail setup belongs to is gone")
        return app

    @property
    def pool(self) -> SMTPPool:
        """The application's pool, built on first use."""
        pool = self._pool
        if pool is not None:
            return pool

        # A child forked while another thread held the lock makes its own.
        if self._lock_pid != os.getpid():
            self._lock, self._lock_pid = threading.Lock(), os.getpid()
        with self._lock:
            if self._pool is None:
                self._pool = self.settings.new_pool()
                # Closed when the application's state goes, or at interpreter exit.
                weakref.finalize(self, self._pool.close)
            return self._pool

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """This application's context, pushed unless it is the active one:
        Flask-Mail's and Flask-Mailman's messages read the app's settings."""
        if (
            flask.has_app_context()
            and flask.current_app.extensions.get(EXTENSION) is self
        ):
            yield
        else:
            with self.app.app_context():
                yield

    def connect(self) -> Connection:
        return Connection(self)

    def send(self, message: Any) -> Refused:
        with self.connect() as connection:
            return connection.send(message)

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        with self.connect() as connection:
            return connection.send_message(*args, **kwargs)


class Connection:
    """A pooled session for a ``with`` block, as Flask-Mail's ``mail.connect()``.

    Each message is sent on the block's session; when the session is lost before
    the server can have accepted a message, smtppool sends it on a fresh one.
    """

    def __init__(self, state: _State) -> None:
        self._state = state
        self._lease: PoolConnection | None = None
        self._open = False

    def __enter__(self) -> Self:
        if self._open:
            raise SMTPPoolError("a connection can be entered only once at a time")
        if not self._state.suppress:
            self._lease = self._state.pool.connection().__enter__()
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.__exit__(exc_type, exc, traceback)

    def send(self, message: Any, envelope_from: str | None = None) -> Refused:
        """Send a Flask-Mail, Flask-Mailman or standard message.

        Returns:
            The recipients the server refused while it accepted others.
        """
        if not self._open:
            raise SMTPPoolError(
                "use the connection inside its block: 'with mail.connect() as conn:'"
            )

        state = self._state
        with state.context():
            refused = self._send(message, envelope_from)
            _dispatched(state.app, message)
        return refused

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a ``flask_mail.Message`` from the arguments and send it."""
        from flask_mail import Message  # noqa: PLC0415 - Flask-Mail is optional

        with self._state.context():
            message = Message(*args, **kwargs)
        return self.send(message)

    def _send(self, message: Any, envelope_from: str | None) -> Refused:
        if isinstance(message, email.message.Message):
            return self._deliver_standard(message, envelope_from)

        # A message of either library means that library is imported already.
        flask_mail = sys.modules.get("flask_mail")
        if flask_mail is not None and isinstance(message, flask_mail.Message):
            return self._deliver_flask_mail(message, envelope_from)
        flask_mailman = sys.modules.get("flask_mailman")
        if flask_mailman is not None and isinstance(
            message, flask_mailman.EmailMessage
        ):
            return self._deliver_flask_mailman(message, envelope_from)

        raise TypeError(
            "send() takes a flask_mail.Message, a flask_mailman.EmailMessage or an "
            f"email.message.EmailMessage, not {type(message).__name__}"
        )

    def _deliver_standard(
        self, message: email.message.Message, envelope_from: str | None
    ) -> Refused:
        if message["From"] is None:
            message["From"] = self._default_sender()

        if self._lease is None:
            return {}
        return self._lease.send_message(message, from_addr=envelope_from)

    def _deliver_flask_mail(self, message: Any, envelope_from: str | None) -> Refused:
        from flask_mail import (  # noqa: PLC0415 - Flask-Mail is optional
            BadHeaderError,
            sanitize_address,
            sanitize_addresses,
        )

        if not message.sender:
            message.sender = self._default_sender()
        if not message.send_to:
            raise ValueError("the message has no recipients")
        if message.has_bad_headers():
            raise BadHeaderError
        if message.date is None:
            message.date = time.time()

        # What message.as_bytes() would write, checked first: Flask-Mail checks
        # only some headers, and only for CR and LF.
        mime = message._message()
        check_headers(mime)
        if self._lease is None:
            return {}
        return self._lease.sendmail(
            sanitize_address(envelope_from or message.sender),
            list(sanitize_addresses(message.send_to)),
            mime.as_bytes(),
            message.mail_options,
            message.rcpt_options,
        )

    def _deliver_flask_mailman(
        self, message: Any, envelope_from: str | None
    ) -> Refused:
        from flask_mailman.message import sanitize_address  # noqa: PLC0415

        mailman = flask.current_app.extensions.get("mailman")
        if mailman is None:
            raise RuntimeError(
                "a flask_mailman message reads its settings from Flask-Mailman: "
                "set it up too, with flask_mailman.Mail(app)"
            )
        recipients = message.recipients()
        if not recipients:
            raise ValueError("the message has no recipients")
        if not message.from_email:
            message.from_email = self._default_sender()
        encoding = message.encoding or mailman.default_charset

        mime = message.message()
        check_headers(mime)
        if self._lease is None:
            return {}
        return self._lease.sendmail(
            sanitize_address(envelope_from or message.from_email, encoding),
            [sanitize_address(address, encoding) for address in recipients],
            mime.as_bytes(linesep="\r\n"),
            mailman.mail_options or (),
        )

    def _default_sender(self) -> str:
        sender = self._state.default_sender
        if sender is None:
            raise ValueError(
                "the message has no sender and MAIL_DEFAULT_SENDER is not set; "
                "give it one"
            )
        return sender


def _dispatched(app: flask.Flask, message: Any) -> None:
    """Tell the signal's subscribers, and Flask-Mail's if it is in use."""
    email_dispatched.send(app, message=message)
    flask_mail = sys.modules.get("flask_mail")
    if flask_mail is not None and isinstance(message, flask_mail.Message):
        flask_mail.email_dispatched.send(app, message=message)


# What Flask-Mail's Mail object passes through to its application's settings.
_FLASK_MAIL_ATTRIBUTES = frozenset(
    {
        "server",
        "port",
        "username",
        "password",
        "use_tls",
        "use_ssl",
        "default_sender",
        "max_emails",
        "suppress",
        "ascii_attachments",
        "debug",
    }
)


class Mail:
    """The Flask extension: ``Mail(app)``, or ``Mail()`` and ``init_app(app)``.

    Each application gets one pool per process, built on first use and closed when
    the application goes or the interpreter exits. Sending works from any thread;
    outside an application context the application given to ``Mail(app)``, or the
    only one given to ``init_app``, is used. Flask-Mail's setting attributes
    (``mail.default_sender``, ``mail.suppress``, ...) read that application's.
    """

    def __init__(self, app: flask.Flask | None = None) -> None:
        self.app = app
        self._states: weakref.WeakKeyDictionary[flask.Flask, _State] = (
            weakref.WeakKeyDictionary()
        )
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
        # Flask-Mail's Message, and code written for Flask-Mail, look here.
        app.extensions["mail"] = state
        self._states[app] = state

    def __getattr__(self, name: str) -> Any:
        # Only Flask-Mail's setting attributes, so that a typo stays an error.
        if name not in _FLASK_MAIL_ATTRIBUTES:
            raise AttributeError(name)
        try:
            state = self._state()
        except RuntimeError as exc:
            raise AttributeError(f"{name}: {exc}") from None
        return getattr(state, name)

    @property
    def pool(self) -> SMTPPool:
        """The underlying pool of the application in use."""
        return self._state().pool

    def connect(self) -> Connection:
        """A pooled session for a ``with`` block: ``with mail.connect() as conn:``."""
        return self._state().connect()

    def send(self, message: Any) -> Refused:
        """Send one message on a session borrowed for the call."""
        return self._state().send(message)

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a ``flask_mail.Message`` from the arguments and send it."""
        return self._state().send_message(*args, **kwargs)

    @contextlib.contextmanager
    def record_messages(self) -> Iterator[list[Any]]:
        """Collect the messages sent (or suppressed) inside the block."""
        outbox: list[Any] = []

        def record(app: flask.Flask, message: Any) -> None:
            outbox.append(message)

        with email_dispatched.connected_to(record):
            yield outbox

    def _state(self) -> _State:
        if self.app is not None:
            return _state_of(self.app)
        if flask.has_app_context():
            return _state_of(flask.current_app)

        states = list(self._states.values())
        if len(states) == 1:
            return states[0]
        if not states:
            raise RuntimeError("call mail.init_app(app) before sending")
        raise RuntimeError(
            f"this Mail serves {len(states)} applications and no application "
            "context is active; send inside 'with app.app_context():'"
        )


def _state_of(app: flask.Flask) -> _State:
    state = app.extensions.get(EXTENSION)
    if not isinstance(state, _State):
        raise RuntimeError(
            "this application was not set up with smtppool's Mail: call "
            "Mail(app) or mail.init_app(app) first"
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
        ``send_messages()`` call borrows one for its messages. It sends with the
        application's settings, so it takes no per-call host or credentials.
        """

        def __init__(
            self, mailman: Any = None, fail_silently: bool = False, **kwargs: Any
        ) -> None:
            super().__init__(mailman=mailman, fail_silently=fail_silently)
            given = sorted(name for name, value in kwargs.items() if value is not None)
            if given:
                raise TypeError(
                    "smtppool.flask.EmailBackend sends with the application's "
                    f"settings and takes no {', '.join(given)}"
                )
            self._state = _state_of(flask.current_app)
            self._connection: Connection | None = None
            # Flask-Mailman lets threads share one backend object.
            self._lock = threading.RLock()

        def open(self) -> bool | None:
            """Borrow a session: True if this call did, False if one is borrowed
            already, None if borrowing failed silently."""
            with self._lock:
                if self._connection is not None:
                    return False
                try:
                    self._connection = Connection(self._state).__enter__()
                except (smtplib.SMTPException, OSError):
                    if not self.fail_silently:
                        raise
                    return None
                return True

        def close(self) -> None:
            with self._lock:
                connection, self._connection = self._connection, None
                if connection is not None:
                    connection.__exit__(None, None, None)

        def send_messages(self, email_messages: list[Any]) -> int:
            if not email_messages:
                return 0
            with self._lock:
                opened = self.open()
                if opened is None:
                    return 0
                try:
                    return sum(self._send_one(m) for m in email_messages)
                finally:
                    if opened:
                        self.close()

        def _send_one(self, message: Any) -> int:
            if not message.recipients() or self._connection is None:
                return 0
            try:
                self._connection.send(message)
            except (smtplib.SMTPException, OSError):
                if not self.fail_silently:
                    raise
                return 0
            return 1
