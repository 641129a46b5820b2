"""The object a caller holds inside ``with pool.connection() as conn:``."""

from __future__ import annotations

import email.message
import smtplib
from collections.abc import Sequence

from ._session import Session, State
from .exceptions import SMTPPoolError

# What smtplib's sendmail and send_message return: refused recipients and why.
Refused = dict[str, tuple[int, bytes]]


class Connection:
    """A pooled SMTP session lent to one caller until the ``with`` block ends.

    The methods have smtplib's semantics and return values. A connection is for one
    thread at a time, and raises :class:`~smtppool.exceptions.SMTPPoolError` once it
    has gone back to the pool.
    """

    __slots__ = ("_pool_name", "_session")

    def __init__(self, session: Session, pool_name: str) -> None:
        self._session: Session | None = session
        self._pool_name = pool_name

    def __repr__(self) -> str:
        if self._session is None:
            return f"<Connection pool={self._pool_name!r} returned>"
        return f"<Connection pool={self._pool_name!r} session={self._session.id}>"

    @property
    def smtp(self) -> smtplib.SMTP:
        """The underlying ``smtplib.SMTP``, for what this wrapper does not cover.

        The pool cannot see what is done with it, so a session that was reached
        this way gets RSET (and must answer 250) before anyone else may use it.
        """
        session = self._lent()
        if session.state is State.READY:
            session.state = State.NEEDS_RESET
        return session.smtp

    def send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Refused:
        """Send an ``email.message.Message``, as ``smtplib.SMTP.send_message`` does."""
        return self._lent().run(
            lambda smtp: smtp.send_message(
                msg, from_addr, to_addrs, mail_options, rcpt_options
            ),
            message=True,
        )

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Refused:
        """Send a message given as text or bytes, as ``smtplib.SMTP.sendmail`` does."""
        return self._lent().run(
            lambda smtp: smtp.sendmail(
                from_addr, to_addrs, msg, mail_options, rcpt_options
            ),
            message=True,
        )

    def noop(self) -> tuple[int, bytes]:
        """Send NOOP and return the server's reply code and text."""
        session = self._lent()
        code, reply = session.run(lambda smtp: smtp.noop(), message=False)
        if code == 421:
            session.state = State.BROKEN
        return code, reply

    def _lent(self) -> Session:
        if self._session is None:
            raise SMTPPoolError(
                f"this connection was already returned to pool {self._pool_name!r}; "
                "use it only inside its 'with pool.connection()' block"
            )
        return self._session

    def _return(self) -> Session:
        """End the loan and hand the session back to the pool's bookkeeping."""
        session = self._lent()
        self._session = None
        return session
