"""The pool: which session each caller gets, and what happens to it afterwards."""

from __future__ import annotations

import email.message
import os
import ssl
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import attrs
from typing_extensions import Self

from . import _fork, _outcome
from ._config import PoolConfig, Security, default_security
from ._connection import Connection, Loan
from ._log import logger
from ._ratelimit import RateLimiter
from ._session import Refused, Session, State, default_tls_context, open_session
from ._smtp import StagedSMTP
from ._stage import Stage
from ._stats import CloseReason, Counters, PoolStats
from .exceptions import DeliveryUnknown, PoolClosed, PoolTimeout, SendError


@attrs.define(eq=False)
class _Waiter:
    """A checkout queued for the next free session or slot, first come first served."""

    wakeup: threading.Condition
    session: Session | None = None
    slot: bool = False

    @property
    def is_served(self) -> bool:
        return self.session is not None or self.slot


# What a checkout is granted: an idle session to check, or None, a slot to open one.
_Grant = Session | None

# Frames from here are left out of a borrower's stack in leak reports.
_PACKAGE_DIR = str(Path(__file__).parent)


class SMTPPool:
    """A thread-safe pool of SMTP sessions to one server.

    Args:
        host: The SMTP server's host name or address.
        port: The server's port; 587 (submission) unless given.
        security: ``"starttls"`` to upgrade a plain session with STARTTLS,
            ``"ssl"`` for implicit TLS, ``"none"`` for no encryption. When omitted
            it is ``"ssl"`` on port 465 and ``"starttls"`` on any other port.
        username: The user to log in as, once per session; needs ``password``.
        password: The password for ``username``, or a callable that returns it,
            called each time a session logs in. Never shown in reprs or logs.
        oauth_token: Instead of a password, a callable that returns an OAuth2
            access token, for AUTH XOAUTH2 (Gmail, Microsoft 365). Called each
            time a session logs in, and once more if the server refuses the
            token (it may have just expired).
        ssl_context: The TLS context; ``ssl.create_default_context()`` when omitted,
            which verifies the certificate and the host name.
        local_hostname: The name sent in EHLO; looked up once per process if omitted.
        source_address: A ``(host, port)`` to bind the client socket to.
        timeout: Seconds any single socket operation may take.
        max_size: The most sessions open at once, counting those being opened.
        acquire_timeout: Seconds a checkout waits for a free session or slot.
        max_idle: Seconds a session may sit unused before it is closed, or None.
        max_lifetime: Seconds a session may live, shortened by a random 0-10 %
            fixed when it is opened, or None for no limit.
        max_messages: Messages a session may send before it is replaced, or None.
        validate_after: Seconds of idleness after which a checkout sends NOOP first.
        retries: How many times a message is sent again on a fresh session when
            the session is lost before the server can have accepted it (see
            ``docs/sending.md``), and how many times opening a session is tried
            again after a disconnect or ``421``. 0 turns this off.
        rate_limit: The most messages the pool starts in any ``rate_period``, or
            None for no limit. Senders wait for their turn before taking a session.
        rate_period: The window of ``rate_limit``, in seconds.
        leak_threshold: Seconds after which a connection still lent is reported
            with a warning that shows where it was taken, or None. Checked
            whenever the pool is used, and when the connection comes back.
        allow_unencrypted_auth: Let ``security="none"`` log in, sending the
            username and password in clear text. Off, so that a mistaken
            ``security`` fails at construction instead of leaking the password.
        pipelining: Send MAIL, every RCPT and DATA in one write when the server
            offers PIPELINING (RFC 2920): two round trips per message instead of
            three plus one per recipient. Turn off only for a server that
            advertises it and mishandles it.
        chunking: Also send the body in that same write, as ``BDAT`` (RFC 3030),
            when the server offers CHUNKING: one round trip per message. A session
            lost before the first reply then raises ``DeliveryUnknown`` instead of
            sending the message again, so it is off unless asked for.
        name: A name for logs, errors and repr; ``host:port`` when omitted.
        clock: A monotonic clock in seconds, used for ages, expiry and the rate
            limit; tests inject a fake one. Waiting for a checkout always uses real
            time.
        sleep: How the rate limit waits; tests pass one that moves their clock.

    Raises:
        ValueError: A size, timeout or age is out of range, or the settings
            contradict each other.
        TypeError: A setting has the wrong type.
    """

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        security: Security | None = None,
        username: str | None = None,
        password: str | Callable[[], str] | None = None,
        oauth_token: Callable[[], str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float = 30.0,
        max_size: int = 5,
        acquire_timeout: float = 30.0,
        max_idle: float | None = 60.0,
        max_lifetime: float | None = 600.0,
        max_messages: int | None = 100,
        validate_after: float = 1.0,
        retries: int = 1,
        rate_limit: int | None = None,
        rate_period: float = 1.0,
        leak_threshold: float | None = None,
        allow_unencrypted_auth: bool = False,
        pipelining: bool = True,
        chunking: bool = False,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = PoolConfig(
            host=host,
            port=port,
            security=default_security(port) if security is None else security,
            username=username,
            password=password,
            oauth_token=oauth_token,
            ssl_context=ssl_context,
            local_hostname=local_hostname,
            source_address=source_address,
            timeout=timeout,
            max_size=max_size,
            acquire_timeout=acquire_timeout,
            max_idle=max_idle,
            max_lifetime=max_lifetime,
            max_messages=max_messages,
            validate_after=validate_after,
            retries=retries,
            rate_limit=rate_limit,
            rate_period=rate_period,
            leak_threshold=leak_threshold,
            allow_unencrypted_auth=allow_unencrypted_auth,
            pipelining=pipelining,
            chunking=chunking,
            name=f"{host}:{port}" if name is None else name,
        )
        self._clock = clock
        self._sleep = sleep
        self._default_context: ssl.SSLContext | None = None
        # Sessions opened before the last drain() have an older generation.
        self._generation = 0
        self._limiter = self._new_limiter()
        self._closed = False
        self._counters = Counters()
        self._start_empty()
        self._pid = os.getpid()
        _fork.track(self)

    def _start_empty(self) -> None:
        """Set up the bookkeeping of a pool with no sessions."""
        # The lock guards only the fields below; no network I/O happens under it.
        # Reentrant only so that a garbage-collected connection can tell whether
        # this thread holds it (see _reclaim); nothing takes it twice.
        self._lock = threading.RLock()
        self._idle: list[Session] = []
        # Every open session the pool owns: idle, lent, or being checked.
        self._sessions: set[Session] = set()
        self._loans: set[Loan] = set()
        # Slots: open sessions plus those being opened.
        self._size = 0
        self._waiters: deque[_Waiter] = deque()
        # Loans whose borrower was garbage-collected; filled without the lock.
        self._leaked: deque[Loan] = deque()

    def _new_limiter(self) -> RateLimiter | None:
        config = self._config
        if config.rate_limit is None:
            return None
        return RateLimiter(
            config.rate_limit, config.rate_period, self._clock, self._sleep
        )

    @property
    def name(self) -> str:
        """The pool's name, as logs, errors and repr show it."""
        return self._config.name

    @property
    def config(self) -> PoolConfig:
        """The validated settings; the password is kept out of its repr."""
        return self._config

    def __repr__(self) -> str:
        self._check_pid()
        with self._lock:
            idle, size, waiting = len(self._idle), self._size, len(self._waiters)
        label = self._config.address
        if self.name != label:
            label = f"{self.name!r} {label}"
        return (
            f"<SMTPPool {label} [{idle} idle, {size - idle} in use, {waiting} waiting]>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> object:
        raise TypeError(
            f"pool {self.name!r} cannot be pickled: its sessions are sockets of this "
            "process. A process started with 'spawn' or 'forkserver' (or any other "
            "process) must build its own pool; pass the settings, not the pool"
        )

    def connection(self) -> Connection:
        """Lend a live session for a ``with`` block, then take it back.

        ``with pool.connection() as conn:`` takes the session when the block is
        entered and returns it when the block is left.

        Raises:
            PoolTimeout: No session became free within ``acquire_timeout``.
            PoolClosed: The pool was closed.
            OSError: Opening a new session failed (smtplib's errors are OSErrors).
        """
        return Connection(self)

    def send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Refused:
        """Send one message on a pooled session, as ``smtplib.SMTP.send_message``.

        Returns and raises as `Connection.send_message`, and also raises
        `PoolTimeout` or `PoolClosed` as `connection` does.
        """
        return self._send(
            lambda smtp: smtp.send_message(
                msg, from_addr, to_addrs, mail_options, rcpt_options
            ),
            msg,
        )

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Refused:
        """Send one message on a pooled session, as ``smtplib.SMTP.sendmail``.

        Returns and raises as `send_message`.
        """
        return self._send(
            lambda smtp: smtp.sendmail(
                from_addr, to_addrs, msg, mail_options, rcpt_options
            ),
            msg,
        )

    def _send(
        self,
        operation: Callable[[StagedSMTP], Refused],
        msg: email.message.Message | str | bytes,
    ) -> Refused:
        self._throttle()
        try:
            with self.connection() as conn:
                return conn._deliver(operation, msg, throttled=True)
        except SendError as exc:
            # Raised while taking the first session, before any message was known.
            if exc.message_id is None:
                exc.message_id = _outcome.message_id_of(msg)
            raise

    def stats(self) -> PoolStats:
        """Return a consistent snapshot of the pool's state and counters."""
        self._check_pid()
        self._collect_leaked()
        self._report_overdue()
        with self._lock:
            counters = self._counters
            idle = len(self._idle)
            return PoolStats(
                size=self._size,
                idle=idle,
                in_use=self._size - idle,
                waiting=len(self._waiters),
                created=counters.created,
                reused=counters.reused,
                closed=counters.closed_counts(),
                noops=counters.noops,
                checkouts=counters.checkouts,
                waits=counters.waits,
                wait_time=counters.wait_time,
                timeouts=counters.timeouts,
                retries=counters.retries,
                delivery_unknown=counters.delivery_unknown,
                rate_waits=counters.rate_waits,
                rate_wait_time=counters.rate_wait_time,
                fork_resets=counters.fork_resets,
            )

    def drain(self) -> None:
        """Close every session opened until now: idle ones at once, lent ones as
        they come back. A send in flight finishes on the session it has; the
        next message goes on a new session.

        Use it when what the server expects of a session changes (a rotated
        certificate, a policy), or after rotating credentials by hand;
        `set_credentials` calls it.
        """
        self._check_pid()
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []

        for session in idle:
            self._discard(session, CloseReason.DRAINED)

    def set_credentials(
        self,
        *,
        username: str,
        password: str | Callable[[], str] | None = None,
        oauth_token: Callable[[], str] | None = None,
    ) -> None:
        """Log in with new credentials from now on, and `drain` the
        sessions that logged in with the old ones.

        Raises:
            ValueError, TypeError: As the constructor, for the same settings;
                the old credentials then stay.
        """
        config = attrs.evolve(
            self._config, username=username, password=password, oauth_token=oauth_token
        )
        with self._lock:
            self._config = config
        self.drain()

    def prune(self) -> None:
        """Close idle sessions that have expired or that the server has dropped."""
        self._check_pid()
        self._collect_leaked()
        self._report_overdue()

        # Take them all out first, so that no checkout uses a session while it is
        # being checked; each keeps its slot and the healthy ones go back after.
        with self._lock:
            sessions, self._idle = self._idle, []

        now = self._clock()
        for session in sessions:
            reason = self._expiry(session, now)
            if reason is None and session.is_readable():
                reason = CloseReason.VALIDATION_FAILED

            if reason is None:
                self._put_back(session)
            else:
                self._discard(session, reason)

    def close(self) -> None:
        """Close the pool: QUIT idle sessions now, in-use ones when they come back.

        Waiting and later checkouts raise `PoolClosed`. Closing twice is
        harmless.
        """
        self._check_pid()
        self._collect_leaked()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            for waiter in self._waiters:
                waiter.wakeup.notify()

        for session in idle:
            self._discard(session, CloseReason.POOL_CLOSED)
        logger.debug("pool.closed pool=%s address=%s", self.name, self._config.address)

    # Lending

    def _lend(self) -> Loan:
        """Check a session out and record the loan."""
        session = self._checkout()

        stack = None
        if self._config.leak_threshold is not None:
            stack = _borrower_stack()
        loan = Loan(session, os.getpid(), self._clock(), stack)
        with self._lock:
            self._loans.add(loan)
        self._report_overdue()
        return loan

    def _give_back(self, loan: Loan) -> None:
        """End a loan and check its session in."""
        loan.returned = True
        if loan.pid != os.getpid():
            # Taken before a fork: the parent checks it in; this process closed its
            # copy of the socket when it reset the pool.
            return

        self._check_pid()
        with self._lock:
            self._loans.discard(loan)
        self._collect_leaked()
        self._report_overdue(loan)
        if loan.session is not None:
            self._checkin(loan.session)

    def _reclaim(self, loan: Loan) -> None:
        """Called when a connection is garbage-collected while still lent."""
        if loan.returned or loan.pid != os.getpid():
            return
        loan.returned = True

        # Garbage collection can run while this very thread holds the lock, in the
        # middle of changing what it guards. Then the loan waits in the queue for
        # the next checkout, checkin, stats(), prune() or close().
        self._leaked.append(loan)
        if not self._lock._is_owned():  # type: ignore[attr-defined]
            # Another thread may hold the lock, but only briefly: nothing under it
            # waits on the network.
            self._collect_leaked()
        # Last, since warnings configured as errors raise here.
        warnings.warn(
            f"a connection from pool {self.name!r} was garbage-collected without "
            "being returned; use it as 'with pool.connection() as conn:'",
            ResourceWarning,
            stacklevel=2,
        )

    def _collect_leaked(self) -> None:
        """Free the slots of loans whose borrower was garbage-collected."""
        if not self._leaked:
            return
        with self._lock:
            sessions = []
            while self._leaked:
                loan = self._leaked.popleft()
                self._loans.discard(loan)
                if loan.session is not None:
                    sessions.append(loan.session)

        for session in sessions:
            # Nobody knows where its borrower left it: close without a command.
            session.state = State.BROKEN
            self._discard(session, CloseReason.LEAKED)

    def _report_overdue(self, returned: Loan | None = None) -> None:
        """Warn once about each loan held longer than ``leak_threshold``."""
        threshold = self._config.leak_threshold
        if threshold is None:
            return

        now = self._clock()
        with self._lock:
            loans = [*self._loans, *([returned] if returned else [])]
            overdue = [
                loan
                for loan in loans
                if not loan.reported and now - loan.taken_at > threshold
            ]
            for loan in overdue:
                loan.reported = True

        for loan in overdue:
            logger.warning(
                "lease.overdue pool=%s address=%s held=%.1fs threshold=%.1fs "
                "returned=%s taken at:\n%s",
                self.name,
                self._config.address,
                now - loan.taken_at,
                threshold,
                "yes" if loan.returned else "no",
                loan.stack,
            )

    # Forks

    def _check_pid(self) -> None:
        """Reset the pool if this process is a child whose fork skipped the hook."""
        if self._pid != os.getpid():
            _fork.reset(self)

    def _after_fork(self) -> None:
        """In a forked child: start empty, and let go of the parent's sessions
        without writing a byte to them."""
        if self._pid == os.getpid():
            return

        # Read without the lock: a thread that did not survive the fork may hold it.
        inherited = list(self._sessions)
        self._start_empty()
        self._limiter = self._new_limiter()
        self._counters.fork_resets += 1
        # Only counted: _fork lets go of every socket this process inherited.
        self._counters.closed[CloseReason.FORKED] += len(inherited)

        # Last: other threads of a child whose fork skipped the hook wait in
        # _fork.reset until the pid says the pool is this process's.
        self._pid = os.getpid()
        logger.debug(
            "pool.forked pool=%s address=%s pid=%d abandoned=%d",
            self.name,
            self._config.address,
            self._pid,
            len(inherited),
        )

    # Checkout

    def _checkout(self) -> Session:
        self._check_pid()
        self._collect_leaked()
        deadline = time.monotonic() + self._config.acquire_timeout
        return self._settle(self._reserve(deadline))

    def _renew(self, session: Session) -> Session:
        """Replace a lent session that is lost, spent or could not be reset,
        keeping its slot, so that the borrower carries on without waiting in line."""
        reason = CloseReason.BROKEN
        if session.state is not State.BROKEN and self._is_spent(session):
            reason = CloseReason.MESSAGES
        elif session.state is not State.BROKEN and self._is_drained(session):
            reason = CloseReason.DRAINED
        return self._settle(self._replace(session, reason))

    def _settle(self, grant: _Grant) -> Session:
        """Turn a grant into a session that passed its checks, or a new one."""
        while True:
            if grant is None:
                return self._open()

            try:
                reason = self._validate(grant)
            except BaseException:
                self._discard(grant, CloseReason.BROKEN)
                raise
            if reason is None:
                with self._lock:
                    self._counters.reused += 1
                return grant

            # The caller never sees a stale session: close it and carry on with
            # another idle one, or with its slot to open a new one.
            grant = self._replace(grant, reason)

    def _reserve(self, deadline: float) -> _Grant:
        """Take an idle session or a slot, waiting in line for one if need be."""
        with self._lock:
            self._raise_if_closed()
            self._counters.checkouts += 1

            if self._idle:
                # Newest first: a few sessions stay hot and the rest expire.
                return self._idle.pop()
            if self._size < self._config.max_size:
                self._size += 1
                return None

            waiter = _Waiter(threading.Condition(self._lock))
            self._waiters.append(waiter)
            started = time.monotonic()
            try:
                while not waiter.is_served and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    waiter.wakeup.wait(remaining)
            except BaseException:
                # Interrupted (a signal handler raised): pass on what this waiter
                # was given, or leave the line, so no session or slot is lost.
                self._abandon_locked(waiter)
                raise

            waited = time.monotonic() - started
            self._counters.waits += 1
            self._counters.wait_time += waited
            if waiter.is_served:
                return waiter.session

            self._waiters.remove(waiter)
            self._raise_if_closed()
            self._counters.timeouts += 1
            raise PoolTimeout(
                f"couldn't get a connection from pool {self.name!r} "
                f"after {waited:.2f} s"
            )

    def _abandon_locked(self, waiter: _Waiter) -> None:
        if waiter.session is not None:
            self._hand_over_locked(waiter.session)
        elif waiter.slot:
            self._release_slot_locked()
        else:
            self._waiters.remove(waiter)

    def _tls_context(self) -> ssl.SSLContext | None:
        """The caller's TLS context, or a default one made once per pool: loading
        the system's certificates takes milliseconds, every session would pay."""
        if self._config.security == "none":
            return None
        if self._config.ssl_context is not None:
            return self._config.ssl_context

        # Two threads may both make one the first time; either will do.
        if self._default_context is None:
            self._default_context = default_tls_context()
        return self._default_context

    def _open(self) -> Session:
        """Open a session in a slot already reserved; free the slot if that fails.

        A session lost while opening (a disconnect, or ``421`` at the greeting or
        any later step) is tried again up to ``retries`` times: the server is
        turning this connection away, not refusing the client.
        """
        attempts = 0
        while True:
            attempts += 1
            try:
                # Read once: drain() or set_credentials() may run meanwhile, and
                # then this session belongs to the generation it was opened in.
                generation, config = self._generation, self._config
                session = open_session(
                    config, self._clock(), self.name, self._tls_context()
                )
                session.generation = generation
            except BaseException as exc:
                if _outcome.is_lost(exc) and attempts <= self._config.retries:
                    self._note_retry(None, Stage.CONNECT, exc)
                    continue
                self._release_slot()
                if not _outcome.is_lost(exc):
                    named = _outcome.naming_the_address(exc, self._config.address)
                    if named is exc:
                        raise
                    # The same error, with the address: nothing else to chain.
                    raise named.with_traceback(exc.__traceback__) from None
                error = _outcome.connection_failed(
                    exc, attempts=attempts, pool=self.name, address=self._config.address
                )
                raise error from exc
            break

        with self._lock:
            self._counters.created += 1
            self._sessions.add(session)
        return session

    def _validate(self, session: Session) -> CloseReason | None:
        """Check an idle session before lending it; return why it must go, if so."""
        now = self._clock()
        reason = self._expiry(session, now)
        if reason is not None:
            return reason

        if session.is_readable():
            return CloseReason.VALIDATION_FAILED

        # A session used moments ago is trusted without a round trip.
        if now - session.last_used <= self._config.validate_after:
            return None

        with self._lock:
            self._counters.noops += 1
        if not session.noop():
            return CloseReason.VALIDATION_FAILED
        return None

    def _replace(self, failed: Session, reason: CloseReason) -> _Grant:
        """Close a session that failed its check; keep its slot, or swap the slot
        for an idle session if there is one."""
        try:
            self._close_session(failed, reason)
        except BaseException:
            with self._lock:
                self._sessions.discard(failed)
                self._release_slot_locked()
            raise

        with self._lock:
            self._counters.closed[reason] += 1
            self._sessions.discard(failed)
            if self._closed:
                self._release_slot_locked()
                self._raise_if_closed()
            if self._idle:
                # Nobody waits while sessions are idle, so the slot just goes.
                self._size -= 1
                return self._idle.pop()
            return None

    def _is_spent(self, session: Session) -> bool:
        """Tell whether a session has sent as many messages as it may."""
        limit = self._config.max_messages
        return limit is not None and session.messages >= limit

    def _is_drained(self, session: Session) -> bool:
        """Tell whether a session was opened before the last drain()."""
        return session.generation != self._generation

    def _expiry(self, session: Session, now: float) -> CloseReason | None:
        if self._is_drained(session):
            return CloseReason.DRAINED
        if self._is_spent(session):
            return CloseReason.MESSAGES
        config = self._config
        if now >= session.expires_at:
            return CloseReason.LIFETIME
        if config.max_idle is not None and now - session.last_used > config.max_idle:
            return CloseReason.IDLE
        return None

    # Checkin

    def _checkin(self, session: Session) -> None:
        now = self._clock()
        if session.state is State.BROKEN:
            self._discard(session, CloseReason.BROKEN)
            return

        reason = self._expiry(session, now)
        if reason is None and session.state is State.NEEDS_RESET:
            try:
                if not session.reset():
                    reason = CloseReason.BROKEN
            except BaseException:
                self._discard(session, CloseReason.BROKEN)
                raise
        if reason is not None:
            self._discard(session, reason)
            return

        session.last_used = now
        self._put_back(session)

    def _put_back(self, session: Session) -> None:
        """Return a healthy session to the pool, or close it if the pool is closed
        or was drained since the session was last checked."""
        with self._lock:
            # Asked again under the lock: drain() may have run since the caller
            # looked, and would otherwise leave this session idle for good.
            if not self._closed and not self._is_drained(session):
                self._hand_over_locked(session)
                return
            closed = self._closed
        self._discard(
            session, CloseReason.POOL_CLOSED if closed else CloseReason.DRAINED
        )

    def _hand_over_locked(self, session: Session) -> None:
        """Give a healthy session to the oldest waiter, or put it on the idle stack."""
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.session = session
            waiter.wakeup.notify()
        else:
            self._idle.append(session)

    # Sending

    def _throttle(self) -> None:
        """Wait for this message's turn under ``rate_limit``, holding no session."""
        self._check_pid()
        if self._limiter is None:
            return

        waited = self._limiter.wait()
        if waited > 0:
            with self._lock:
                self._counters.rate_waits += 1
                self._counters.rate_wait_time += waited

    def _note_retry(
        self, session: Session | None, stage: Stage, exc: BaseException
    ) -> None:
        with self._lock:
            self._counters.retries += 1
        logger.info(
            "send.retry pool=%s address=%s session=%s stage=%s error=%s",
            self.name,
            self._config.address,
            "new" if session is None else session.id,
            stage.value,
            _outcome.describe(exc),
        )

    def _note_refused(self, session: Session, refused: Refused) -> None:
        # How many and why; the addresses stay out of the log, as recipient lists do.
        codes = ",".join(sorted({str(code) for code, _ in refused.values()}))
        logger.info(
            "send.refused pool=%s address=%s session=%d recipients=%d codes=%s",
            self.name,
            self._config.address,
            session.id,
            len(refused),
            codes,
        )

    def _note_failure(self, session: Session | None, error: SendError) -> None:
        if not isinstance(error, DeliveryUnknown):
            return

        with self._lock:
            self._counters.delivery_unknown += 1
        logger.warning(
            "send.unknown pool=%s address=%s session=%s message_id=%s",
            self.name,
            self._config.address,
            "none" if session is None else session.id,
            error.message_id,
        )

    # Closing

    def _discard(self, session: Session, reason: CloseReason) -> None:
        """Close a session the pool owns and free its slot, even if interrupted."""
        try:
            self._close_session(session, reason)
        finally:
            with self._lock:
                self._counters.closed[reason] += 1
                self._sessions.discard(session)
                self._release_slot_locked()

    def _close_session(self, session: Session, reason: CloseReason) -> None:
        broken = session.state is State.BROKEN or reason in (
            CloseReason.BROKEN,
            CloseReason.VALIDATION_FAILED,
        )
        if reason is CloseReason.BROKEN:
            logger.warning(
                "close.broken pool=%s address=%s session=%d",
                self.name,
                self._config.address,
                session.id,
            )
        else:
            logger.debug(
                "close pool=%s address=%s session=%d reason=%s",
                self.name,
                self._config.address,
                session.id,
                reason.value,
            )
        failure = session.close(polite=not broken)
        if failure is not None:
            logger.debug(
                "close.quit_failed pool=%s address=%s session=%d error=%s",
                self.name,
                self._config.address,
                session.id,
                _outcome.describe(failure),
            )

    def _release_slot(self) -> None:
        with self._lock:
            self._release_slot_locked()

    def _release_slot_locked(self) -> None:
        """Pass a freed slot to the oldest waiter, or shrink the pool."""
        if self._waiters and not self._closed:
            waiter = self._waiters.popleft()
            waiter.slot = True
            waiter.wakeup.notify()
        else:
            self._size -= 1

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed")


def _borrower_stack() -> str:
    """The caller's stack, without the frames inside smtppool."""
    frames = [
        frame
        for frame in traceback.extract_stack()
        if not frame.filename.startswith(_PACKAGE_DIR)
    ]
    return "".join(traceback.format_list(frames))
