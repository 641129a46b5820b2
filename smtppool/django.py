"""Django email backend that sends through a pool shared by the whole process.

    # settings.py
    EMAIL_BACKEND = "smtppool.django.EmailBackend"
    SMTPPOOL = {"max_size": 3}  # optional: any other SMTPPool setting

Everything else is Django's: ``EMAIL_HOST``, ``EMAIL_PORT``, ``EMAIL_HOST_USER``,
``EMAIL_HOST_PASSWORD``, ``EMAIL_USE_TLS``, ``EMAIL_USE_SSL``, ``EMAIL_TIMEOUT``,
``EMAIL_SSL_CERTFILE`` and ``EMAIL_SSL_KEYFILE``, or the same keyword arguments to
``get_connection()``.
"""

from __future__ import annotations

import atexit
import collections
import os
import smtplib
import ssl
import threading
from typing import Any

try:
    from django.conf import settings
    from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "smtppool.django needs Django: pip install 'smtppool[django]'"
    ) from exc

from . import _outcome
from ._config import Security
from ._connection import Connection
from ._log import logger
from ._pool import SMTPPool
from ._smtp import check_headers

__all__ = ["EmailBackend", "close_pools"]

# One pool per distinct configuration, for the whole process, the most recently
# used last. Pools are fork-safe, so a pool built before a fork serves each child
# with sessions of its own.
_pools: collections.OrderedDict[tuple[Any, ...], SMTPPool] = collections.OrderedDict()

# Configurations kept at once: per-tenant credentials or override_settings in tests
# make new ones, and the least recently used beyond this many are closed.
MAX_POOLS = 32

# The lock, and the process it was made in: a forked child makes its own, since a
# thread of the parent may have held this one at the fork.
_pools_lock = threading.Lock()
_pools_lock_pid = os.getpid()


def _pools_lock_here() -> threading.Lock:
    global _pools_lock, _pools_lock_pid

    if _pools_lock_pid != os.getpid():
        _pools_lock, _pools_lock_pid = threading.Lock(), os.getpid()
    return _pools_lock


def close_pools() -> None:
    """Close every pool this backend has built; later sends outside a
    ``get_connection()`` block build new ones."""
    with _pools_lock_here():
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


class EmailBackend(DjangoSMTPBackend):  # type: ignore[misc]
    """Django's SMTP backend, on pooled sessions.

    Django's own class reads the settings and prepares each message, the way the
    installed Django version does; this one only replaces its connection with a
    session borrowed from the pool. Outside ``open()``/``close()`` each
    ``send_messages()`` call borrows a session; ``with get_connection() as c:``
    keeps one for the block. ``close()`` gives the session back and the pool stays
    open.
    """

    # Set by Django's constructor; the connection is a pooled session here.
    connection: Connection | None
    fail_silently: bool

    def __repr__(self) -> str:
        return f"<smtppool.django.EmailBackend {self.host}:{self.port}>"

    @property
    def pool(self) -> SMTPPool:
        """The process-wide pool for this backend's settings."""
        key = (
            self.host,
            self.port,
            self.username,
            self.password,
            self.use_tls,
            self.use_ssl,
            self.timeout,
            self.ssl_keyfile,
            self.ssl_certfile,
            tuple(sorted((k, _hashable(v)) for k, v in _pool_options().items())),
        )
        with _pools_lock_here():
            pool = _pools.get(key)
            if pool is not None:
                _pools.move_to_end(key)
                return pool
            pool = _pools[key] = self._new_pool()
            others = list(_pools.values())[:-1]
            evicted = others[: max(0, len(others) + 1 - MAX_POOLS)]
            for _ in evicted:
                _pools.popitem(last=False)

        # A new configuration is a good moment to let go of what the others no
        # longer need: their expired idle sessions, or the oldest pools entirely.
        for old in others:
            if old in evicted:
                old.close()
            else:
                old.prune()
        return pool

    def open(self) -> bool | None:
        """Borrow a session until ``close()``: True if this call borrowed it,
        False if one was borrowed already, None if borrowing failed silently."""
        if self.connection is not None:
            return False
        try:
            self.connection = self.pool.connection().__enter__()
        except (smtplib.SMTPException, OSError) as exc:
            if not self.fail_silently:
                raise
            self._log_silenced(exc)
            return None
        return True

    def close(self) -> None:
        """Give the borrowed session back to the pool."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.__exit__(None, None, None)

    def _send(self, email_message: Any) -> bool:
        # Django's _send swallows only smtplib's errors when failing silently, and
        # says nothing. Run it strictly, then decide here, under send_messages'
        # lock, so that every error is swallowed and logged.
        silently, self.fail_silently = self.fail_silently, False
        _check_when_built(email_message)  # removed again below
        try:
            return bool(super()._send(email_message))
        except (smtplib.SMTPException, OSError) as exc:
            if not silently:
                raise
            self._log_silenced(exc)
            return False
        finally:
            self.fail_silently = silently
            del email_message.message

    def _new_pool(self) -> SMTPPool:
        security: Security = "none"
        if self.use_ssl:
            security = "ssl"
        elif self.use_tls:
            security = "starttls"

        options = dict(_pool_options())
        if security != "none" and (self.ssl_certfile or self.ssl_keyfile):
            if options.get("ssl_context") is not None:
                raise ValueError(
                    "EMAIL_SSL_CERTFILE or EMAIL_SSL_KEYFILE is set and so is "
                    "SMTPPOOL['ssl_context']; load the certificate into that "
                    "context with its load_cert_chain() instead"
                )
            # A client certificate, presented on a context that still verifies
            # the server.
            context = ssl.create_default_context()
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            options["ssl_context"] = context
        # Django's own setting, or get_connection()'s argument, wins.
        if self.timeout is not None:
            options["timeout"] = self.timeout
        try:
            port = int(self.port)
        except (TypeError, ValueError):
            raise ValueError(
                f"EMAIL_PORT must be a port number, got {self.port!r}"
            ) from None

        # As Django does, log in only when both are set.
        login = bool(self.username and self.password)
        if login and security == "none" and not options.get("allow_unencrypted_auth"):
            raise ValueError(
                "EMAIL_HOST_USER and EMAIL_HOST_PASSWORD are set but neither "
                "EMAIL_USE_TLS nor EMAIL_USE_SSL: the password would cross the "
                "network unencrypted. Set EMAIL_USE_TLS (STARTTLS, port 587) or "
                "EMAIL_USE_SSL (port 465), or SMTPPOOL = {'allow_unencrypted_auth': "
                "True} for a relay you trust on a network you trust"
            )
        return SMTPPool(
            self.host,
            port,
            security=security,
            username=self.username if login else None,
            password=self.password if login else None,
            **options,
        )

    def _log_silenced(self, exc: BaseException) -> None:
        # The error's type and reply code only: its text may list recipients.
        reply = _outcome.reply_of(exc)
        logger.warning(
            "send.silenced address=%s:%s error=%s reply=%s",
            self.host,
            self.port,
            type(exc).__name__,
            "-" if reply is None else reply[0],
        )


def _check_when_built(email_message: Any) -> None:
    """Wrap the message's ``message()`` for one send, so that its headers are
    checked as Django builds it, before a byte is sent: Django 5.2 refuses CR and
    LF in headers, but not the other characters Python's email package writes as
    line breaks. Django's ``_send`` hands only the finished bytes on, so the
    wrapper is the one place to see the built message, whatever arguments the
    Django version passes. The caller deletes the wrapper afterwards."""
    build = email_message.message

    def checked(*args: Any, **kwargs: Any) -> Any:
        built = build(*args, **kwargs)
        check_headers(built)
        return built

    email_message.message = checked


def _hashable(value: Any) -> Any:
    """A value fit for the pool key: itself, or its repr if it is a list or dict."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _pool_options() -> dict[str, Any]:
    options = getattr(settings, "SMTPPOOL", None) or {}
    if not isinstance(options, dict):
        raise TypeError(
            f"SMTPPOOL must be a dict of SMTPPool settings, got {options!r}"
        )
    return options
