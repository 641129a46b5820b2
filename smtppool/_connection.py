"""The object a caller holds inside ``with pool.connection() as conn:``, and how
it gets each message through."""

from __future__ import annotations

import email.message
import smtplib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import _outcome
from ._session import Refused, Session, State
from ._smtp import StagedSMTP
from ._stage import Stage
from .exceptions import SendError, SMTPPoolError

if TYPE_CHECKING:
    from ._pool import SMTPPool

__all__ = ["Connection", "Refused"]


class Connection:
    """A pooled SMTP session lent to one caller until the ``with`` block ends.

    The methods have smtplib's semantics and return values. When the session is
    lost before the server can have accepted a message (a disconnect, or a ``421``
    at any step up to the reply to the final dot), the connection takes a fresh
    session and sends the message again, up to the pool's ``retries``; so the
    session behind it may change between calls. A connection is for one thread at
    a time, and raises :class:`~smtppool.exceptions.SMTPPoolError` once it has gone
    back to the pool.
    """

    __slots__ = ("_pool", "_returned", "_session")

    def __init__(self, pool: SMTPPool, session: Session) -> None:
        self._pool = pool
        # None between a session lost for good and the next call that needs one.
        self._session: Session | None = session
        self._returned = False

    def __repr__(self) -> str:
        if self._returned:
            return f"<Connection pool={self._pool.name!r} returned>"
        if self._session is None:
            return f"<Connection pool={self._pool.name!r} no session>"
        return f"<Connection pool={self._pool.name!r} session={self._session.id}>"

    @property
    def smtp(self) -> smtplib.SMTP:
        """The underlying ``smtplib.SMTP``, for what this wrapper does not cover.

        The pool cannot see what is done with it, so a session that was reached
        this way gets RSET (and must answer 250) before anyone else may use it.
        """
        session = self._usable()
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
        """Send an ``email.message.Message``, as ``smtplib.SMTP.send_message`` does.

        Returns:
            The recipients the server refused, with its reply to each, when it
            accepted some others.

        Raises:
            DeliveryUnknown: The message may have been delivered; it was not resent.
            ConnectionFailed: The session was lost on every attempt.
            TransientError: The server refused with a 4xx reply.
            PermanentError: The server refused with a 5xx reply.
        """
        return self._deliver(
            lambda smtp: smtp.send_message(
                msg, from_addr, to_addrs, mail_options, rcpt_options
            ),
            msg,
            throttled=False,
        )

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Refused:
        """Send a message given as text or bytes, as ``smtplib.SMTP.sendmail`` does.

        Returns and raises as :meth:`send_message`.
        """
        return self._deliver(
            lambda smtp: smtp.sendmail(
                from_addr, to_addrs, msg, mail_options, rcpt_options
            ),
            msg,
            throttled=False,
        )

    def noop(self) -> tuple[int, bytes]:
        """Send NOOP and return the server's reply code and text."""
        session = self._usable()
        code, reply = session.run(lambda smtp: smtp.noop(), message=False)
        if code == 421:
            session.state = State.BROKEN
        return code, reply

    def _deliver(
        self,
        operation: Callable[[StagedSMTP], Refused],
        msg: email.message.Message | str | bytes,
        *,
        throttled: bool,
    ) -> Refused:
        """Send one message, on a fresh session again if the first one is lost
        before the server can have accepted it."""
        self._check_lent()
        if not throttled:
            self._pool._throttle()

        attempts = 0
        while True:
            try:
                session = self._usable()
            except SendError as exc:
                # Opening a new session failed on every attempt: say for which message.
                exc.message_id = _outcome.message_id_of(msg)
                raise
            attempts += 1
            try:
                refused = session.send(operation)
            except BaseException as exc:
                stage = session.smtp.stage
                if not self._may_resend(exc, stage, attempts):
                    error = self._error(exc, stage, msg, attempts)
                    if error is None:
                        raise
                    raise error from exc
                self._pool._note_retry(session, stage, exc)
                continue

            if refused:
                self._pool._note_refused(session, refused)
            return refused

    def _may_resend(self, exc: BaseException, stage: Stage, attempts: int) -> bool:
        return _outcome.may_resend(exc, stage) and attempts <= self._pool.config.retries

    def _error(
        self,
        exc: BaseException,
        stage: Stage,
        msg: email.message.Message | str | bytes,
        attempts: int,
    ) -> SendError | None:
        """The error to raise, chained to smtplib's, for a send that failed for
        good; None for errors that say nothing about the message (an interruption,
        a bad argument), which pass through unchanged."""
        pool, session = self._pool, self._session
        message_id = _outcome.message_id_of(msg)

        error: SendError | None
        if _outcome.is_unknown(exc, stage):
            error = _outcome.delivery_unknown(
                exc,
                message_id=message_id,
                recipients=session.smtp.accepted if session is not None else (),
                pool=pool.name,
                address=pool.config.address,
            )
        elif _outcome.is_lost(exc):
            error = _outcome.connection_failed(
                exc, attempts=attempts, pool=pool.name, address=pool.config.address
            )
        else:
            error = _outcome.refusal(exc)
        if error is None:
            return None

        error.stage = stage
        error.message_id = message_id
        pool._note_failure(session, error)
        return error

    def _usable(self) -> Session:
        """The session to use next: the current one if it can go on, else a new one.

        A lost session is replaced; one that reached ``max_messages`` is closed
        after its last message and replaced; one left in an open transaction gets
        RSET (RFC 5321 section 4.1.1.5) and is replaced if that fails.
        """
        self._check_lent()
        pool, session = self._pool, self._session
        if session is None:
            session = pool._checkout()
        elif not self._can_go_on(session):
            self._session = None
            session = pool._renew(session)

        self._session = session
        return session

    def _can_go_on(self, session: Session) -> bool:
        if session.state is State.BROKEN or self._pool._is_spent(session):
            return False
        return session.state is State.READY or session.reset()

    def _check_lent(self) -> None:
        if self._returned:
            raise SMTPPoolError(
                f"this connection was already returned to pool {self._pool.name!r}; "
                "use it only inside its 'with pool.connection()' block"
            )

    def _return(self) -> Session | None:
        """End the loan and hand the session, if any, back to the pool."""
        self._check_lent()
        session, self._session = self._session, None
        self._returned = True
        return session
