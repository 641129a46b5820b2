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
import smtplib
import ssl
import threading
from collections.abc import Sequence
from typing import Any

try:
    from django.conf import settings
    from django.core.mail.backends.base import BaseEmailBackend
    from django.core.mail.message import EmailMessage, sanitize_address
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "smtppool.django needs Django: pip install 'smtppool[django]'"
    ) from exc

from ._config import Security
from ._connection import Connection
from ._log import logger
from ._pool import SMTPPool

__all__ = ["EmailBackend", "close_pools"]

# One pool per distinct configuration, for the whole process. Pools are fork-safe,
# so a pool built before a fork serves each child with sessions of its own.
_pools: dict[tuple[Any, ...], SMTPPool] = {}
_pools_lock = threading.Lock()


def close_pools() -> None:
    """Close every pool this backend has built; later sends build new ones."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Django's SMTP backend, on pooled sessions.

    Outside ``open()``/``close()`` each ``send_messages()`` call borrows a session
    from the pool; ``with get_connection() as connection:`` keeps one session for
    the block. ``close()`` gives the session back; the pool stays open.
    """

    def __init__(  # noqa: PLR0917 - Django's own signature, positions included
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently)
        self.host = host or settings.EMAIL_HOST
        self.port = port or settings.EMAIL_PORT
        self.username = settings.EMAIL_HOST_USER if username is None else username
        self.password = settings.EMAIL_HOST_PASSWORD if password is None else password
        self.use_tls = settings.EMAIL_USE_TLS if use_tls is None else use_tls
        self.use_ssl = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
        self.timeout = settings.EMAIL_TIMEOUT if timeout is None else timeout
        self.ssl_keyfile = (
            settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
        )
        self.ssl_certfile = (
            settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
        )
        if self.use_ssl and self.use_tls:
            # Django's own words for the same mistake.
            raise ValueError(
                "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set "
                "one of those settings to True."
            )
        self._connection: Connection | None = None
        # Django lets threads share one backend object.
        self._lock = threading.RLock()

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
            tuple(sorted(_pool_options().items())),
        )
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = self._new_pool()
            return pool

    def open(self) -> bool | None:
        """Borrow a session until ``close()``; True if this call borrowed it, None
        if it failed silently."""
        with self._lock:
            if self._connection is not None:
                return False
            try:
                self._connection = self.pool.connection().__enter__()
            except (smtplib.SMTPException, OSError) as exc:
                if not self.fail_silently:
                    raise
                self._log_silenced(exc)
                return None
            return True

    def close(self) -> None:
        """Give the borrowed session back to the pool."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.__exit__(None, None, None)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send the messages and return how many were sent; messages without
        recipients are skipped, as Django's SMTP backend skips them."""
        if not email_messages:
            return 0
        with self._lock:
            opened = self.open()
            if self._connection is None or opened is None:
                return 0
            try:
                return sum(self._send(message) for message in email_messages)
            finally:
                if opened:
                    self.close()

    def _send(self, message: EmailMessage) -> bool:
        if not message.recipients():
            return False
        assert self._connection is not None  # noqa: S101 - send_messages opened it

        encoding = message.encoding or settings.DEFAULT_CHARSET
        from_email = sanitize_address(message.from_email, encoding)
        recipients = [sanitize_address(a, encoding) for a in message.recipients()]
        try:
            self._connection.sendmail(
                from_email,
                recipients,
                message.message().as_bytes(linesep="\r\n"),
            )
        except (smtplib.SMTPException, OSError) as exc:
            if not self.fail_silently:
                raise
            self._log_silenced(exc)
            return False
        return True

    def _new_pool(self) -> SMTPPool:
        security: Security = "none"
        if self.use_ssl:
            security = "ssl"
        elif self.use_tls:
            security = "starttls"

        context = None
        if self.ssl_certfile or self.ssl_keyfile:
            # A client certificate, presented on a context that still verifies
            # the server.
            context = ssl.create_default_context()
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)

        options = dict(_pool_options())
        options.setdefault("ssl_context", context)
        if self.timeout is not None:
            options.setdefault("timeout", self.timeout)
        # As Django does, log in only when both are set.
        login = bool(self.username and self.password)
        return SMTPPool(
            self.host,
            int(self.port),
            security=security,
            username=self.username if login else None,
            password=self.password if login else None,
            **options,
        )

    def _log_silenced(self, exc: BaseException) -> None:
        logger.warning(
            "send.silenced address=%s:%s error=%s: %s",
            self.host,
            self.port,
            type(exc).__name__,
            exc,
        )


def _pool_options() -> dict[str, Any]:
    options = getattr(settings, "SMTPPOOL", None) or {}
    if not isinstance(options, dict):
        raise TypeError(
            f"SMTPPOOL must be a dict of SMTPPool settings, got {options!r}"
        )
    return options
