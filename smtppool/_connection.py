"""The object a caller holds inside ``with pool.connection() as conn:``, and how
it gets each message through."""

from __future__ import annotations

import email.message
import os
import smtplib
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs
from typing_extensions import Self

from . import _outcome
from ._session import Refused, Session, State
from ._smtp import StagedSMTP
from ._stage import Stage
from .exceptions import SendError, SMTPPoolError

if TYPE_CHECKING:
    from ._pool import SMTPPool

__all__ = ["Connection", "Loan", "Refused"]


@attrs.define(eq=False)
class Loan:
    """One borrowing, as the pool tracks it: it outlives a borrower that is
    garbage-collected without giving the session back."""

    # None between a session lost for good and the next call that needs one.
    session: Session | None
    pid: int
    taken_at: float
    # Where it was borrowed, kept only when the pool has a leak_threshold.
    stack: str | None = None
    # A session the borrower reached through ``conn.smtp``: the pool cannot know
    # what was left open on it, so it says RSET before using it or giving it back.
    exposed: Session | None = None
    reported: bool = False
    returned: bool = False


class Connection:
    """A pooled SMTP session lent to one caller until the ``with`` block ends.

    The methods have smtplib's semantics and return values. When the session is
    lost before the server can have accepted a message (a disconnect, or a ``421``
    at any step up to the reply to the final dot), the connection takes a fresh
    session and sends the message again, up to the pool's ``retries``; so the
    session behind it may change between calls. A connection is for one thread at
    a time, and raises `SMTPPoolError` outside its
    ``with`` block or in a process forked from the one that took it.
    """

    __slots__ = ("__weakref__", "_finalizer", "_loan", "_pool")

    def __init__(self, pool: SMTPPool) -> None:
        self._pool = pool
        self._loan: Loan | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __reduce__(self) -> str:
        raise TypeError(
            f"a connection from pool {self._pool.name!r} cannot be pickled: it "
            "lends a socket of this process to one block of code"
        )

    def __repr__(self) -> str:
        loan = self._loan
        if loan is None:
            return f"<Connection pool={self._pool.name!r} not entered>"
        if loan.returned:
            return f"<Connection pool={self._pool.name!r} returned>"
        if loan.session is None:
            return f"<Connection pool={self._pool.name!r} no session>"
        return f"<Connection pool={self._pool.name!r} session={loan.session.id}>"

    def __enter__(self) -> Self:
        if self._loan is not None:
            raise SMTPPoolError(
                "a connection can be entered only once; call pool.connection() again"
            )

        loan = self._pool._lend()
        self._loan = loan
        # A borrower dropped without leaving its block still gives the slot back.
        self._finalizer = weakref.finalize(self, self._pool._reclaim, loan)
        self._finalizer.atexit = False
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loan = self._loan
        if loan is None or loan.returned:
            return
        if self._finalizer is not None:
            self._finalizer.detach()

        # The block failed somewhere, or the caller used the raw session: keep it
        # only if RSET proves it is back to a clean state.
        session = loan.session
        unknown = exc_type is not None or session is loan.exposed
        if unknown and session and session.state is State.READY:
            session.state = State.NEEDS_RESET
        self._pool._give_back(loan)

    @property
    def smtp(self) -> smtplib.SMTP:
        """The underlying ``smtplib.SMTP``, for what this wrapper does not cover.

        The pool cannot see what is done with it, so from then on the session gets
        RSET (and must answer 250) before each message this connection sends on it
        and before anyone else may use it.
        """
        session = self._usable()
        self._lent().exposed = session
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

        Returns and raises as `send_message`.
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
        return self._usable().command(lambda smtp: smtp.noop())

    def _deliver(
        self,
        operation: Callable[[StagedSMTP], Refused],
        msg: email.message.Message | str | bytes,
        *,
        throttled: bool,
    ) -> Refused:
        """Send one message, on a fresh session again if the first one is lost
        before the server can have accepted it."""
        self._lent()
        if not throttled:
            self._pool._throttle()

        attempts = 0
        while True:
            try:
                session = self._usable(for_message=True)
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
        pool, session = self._pool, self._lent().session
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

    def _usable(self, *, for_message: bool = False) -> Session:
        """The session to use next: the current one if it can go on, else a new one.

        A lost session is replaced; one that reached ``max_messages`` is closed
        and replaced; one left in an open transaction gets RSET (RFC 5321 section
        4.1.1.5) and is replaced if that fails. Before a message, so does one the
        caller reached through ``conn.smtp``.
        """
        loan = self._lent()
        pool, session = self._pool, loan.session
        if session is None:
            session = pool._checkout()
        else:
            exposed = for_message and session is loan.exposed
            if exposed and session.state is State.READY:
                session.state = State.NEEDS_RESET
            if not self._can_go_on(session):
                loan.session = None
                session = pool._renew(session)

        loan.session = session
        return session

    def _can_go_on(self, session: Session) -> bool:
        pool = self._pool
        if session.state is State.BROKEN or pool._is_spent(session):
            return False
        if pool._is_drained(session):
            return False
        return session.state is State.READY or session.reset()

    def _lent(self) -> Loan:
        """The loan, if this connection may be used here and now."""
        loan, name = self._loan, self._pool.name
        if loan is None:
            raise SMTPPoolError(
                f"use a connection from pool {name!r} inside "
                "'with pool.connection() as conn:'"
            )
        if loan.returned:
            raise SMTPPoolError(
                f"this connection was already returned to pool {name!r}; "
                "use it only inside its 'with pool.connection()' block"
            )
        if loan.pid != os.getpid():
            raise SMTPPoolError(
                f"this connection from pool {name!r} was taken in process "
                f"{loan.pid}, before a fork; take a new one in this process"
            )
        return loan
