"""One SMTP session: opening it, checking it, running commands on it, closing it.

Everything here does network I/O, so the pool never calls it with its lock held.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import os
import random
import select
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TypeVar

import attrs

from ._config import PoolConfig
from ._log import logger
from ._smtp import StagedSMTP, StagedSMTP_SSL
from .exceptions import CredentialsUnavailable

T = TypeVar("T")

# What smtplib's sendmail and send_message return: refused recipients and why.
Refused = dict[str, tuple[int, bytes]]

# Closing must not hang a worker on a server that stopped answering: QUIT gets at
# most this long, whatever the session's own timeout.
QUIT_TIMEOUT = 2.0

# max_lifetime is shortened by up to this fraction, chosen once per session, so that
# sessions opened together do not all expire together.
LIFETIME_JITTER = 0.1

_ids = itertools.count(1)
_hostname: str | None = None
# The lock, and the process it was made in: a forked child makes its own, since a
# thread of the parent may have held this one at the fork.
_hostname_lock = threading.Lock()
_hostname_lock_pid = os.getpid()


def _hostname_lock_here() -> threading.Lock:
    global _hostname_lock, _hostname_lock_pid

    if _hostname_lock_pid != os.getpid():
        _hostname_lock, _hostname_lock_pid = threading.Lock(), os.getpid()
    return _hostname_lock


def default_local_hostname() -> str:
    """Return the name to send in EHLO, working it out once per process.

    smtplib looks this up with ``socket.getfqdn()`` for every new ``SMTP`` object
    unless it is given a name, and that lookup can block for seconds on a machine
    whose host name does not resolve. The rule is smtplib's own: the FQDN if it has
    a dot, else the address literal of the host (RFC 5321 section 4.1.4).
    """
    global _hostname  # noqa: PLW0603 - a per-process cache by design

    with _hostname_lock_here():
        if _hostname is None:
            fqdn = socket.getfqdn()
            if "." in fqdn:
                _hostname = fqdn
            else:
                try:
                    address = socket.gethostbyname(socket.gethostname())
                except OSError:
                    address = "127.0.0.1"
                _hostname = f"[{address}]"
        return _hostname


def forget_local_hostname() -> None:
    """Drop the cached EHLO name, so that the next session works it out again."""
    global _hostname  # noqa: PLW0603

    with _hostname_lock_here():
        _hostname = None


def default_tls_context() -> ssl.SSLContext:
    """The TLS context used when the caller gives none: the system's certificate
    authorities, certificates and host names verified, TLS 1.2 or newer."""
    context = ssl.create_default_context()
    # Python's default since 3.10; stated, since it is a promise of ours.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class State(enum.Enum):
    """What is known of a session's protocol state."""

    # No transaction is open and every reply has been read.
    READY = "ready"
    # Replies are in step, but a transaction may be open: RSET before reuse.
    NEEDS_RESET = "needs_reset"
    # Lost, answered 421, timed out or interrupted mid-command: never reuse.
    BROKEN = "broken"


@attrs.define(eq=False)
class Session:
    """An open ``smtplib.SMTP`` with what the pool needs to know to recycle it."""

    smtp: StagedSMTP
    created_at: float
    expires_at: float
    last_used: float
    id: int = attrs.field(factory=lambda: next(_ids))
    messages: int = 0
    state: State = State.READY
    # The pool's generation when the session was opened; drain() starts a new one.
    generation: int = 0

    def is_readable(self) -> bool:
        """Tell, without a round trip, whether the server has spoken or hung up.

        An idle client session should have nothing to read: the server only ever
        answers commands. Readable therefore means a pending reply nobody asked for
        (a ``421`` before the server closes, RFC 5321 section 3.8) or end of file.
        ``poll`` rather than ``select``, which fails on descriptors above 1023.
        """
        sock = self.smtp.sock
        if sock is None or sock.fileno() < 0:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True

        if not hasattr(select, "poll"):  # Windows has no poll
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable)
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))

    def run(self, operation: Callable[[StagedSMTP], T], *, message: bool) -> T:
        """Run one exchange on the session and record the state it leaves behind."""
        if message:
            self.messages += 1

        # Until the operation returns, the replies may be out of step with the
        # commands; only a completed operation or a clean refusal says otherwise.
        self.state = State.BROKEN
        try:
            result = operation(self.smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._after_refusal(closing=421 in codes)
            raise
        except smtplib.SMTPResponseException as exc:
            self._after_refusal(closing=exc.smtp_code == 421)
            raise
        except smtplib.SMTPServerDisconnected:
            raise  # lost: stays BROKEN
        except smtplib.SMTPException:
            # Refused on our side before a command went out (SMTPUTF8 not offered).
            self.state = State.NEEDS_RESET
            raise
        except OSError:
            raise  # reset or timed out (smtplib's errors are OSErrors too): BROKEN
        except Exception:
            # Raised while building or encoding the message, before it is sent.
            self.state = State.NEEDS_RESET
            raise

        self.state = State.READY
        return result

    def send(self, operation: Callable[[StagedSMTP], Refused]) -> Refused:
        """Run one mail transaction, recording the stages it goes through."""
        self.smtp.begin()
        return self.run(operation, message=True)

    def _after_refusal(self, *, closing: bool) -> None:
        if not closing:
            # smtplib sends RSET itself after a refused MAIL or all RCPTs refused;
            # if that got its 250, the session is clean already.
            self.state = State.READY if self.smtp.is_reset else State.NEEDS_RESET
            return

        self._hang_up()

    def _hang_up(self) -> None:
        """Close our end after a 421: the server is closing the channel (RFC 5321
        section 3.8). smtplib does so after some commands but not after DATA."""
        self.state = State.BROKEN
        with contextlib.suppress(OSError):
            self.smtp.close()

    def command(
        self, operation: Callable[[StagedSMTP], tuple[int, bytes]]
    ) -> tuple[int, bytes]:
        """Run a command that returns its reply instead of raising (NOOP, RSET);
        a 421 ends the session like a 421 anywhere else."""
        code, reply = self.run(operation, message=False)
        if code == 421:
            self._hang_up()
        return code, reply

    def noop(self) -> bool:
        """Send NOOP; tell whether the server answered 250."""
        try:
            code, _ = self.command(lambda smtp: smtp.noop())
        except (smtplib.SMTPException, OSError):
            return False
        return code == 250

    def reset(self) -> bool:
        """Send RSET to end any open transaction; tell whether it answered 250."""
        try:
            code, _ = self.command(lambda smtp: smtp.rset())
        except (smtplib.SMTPException, OSError):
            return False
        if code != 250:
            self.state = State.BROKEN
        return code == 250

    def close(self, *, polite: bool) -> BaseException | None:
        """Close the session, saying QUIT first when ``polite`` and it may help.

        Errors are returned, not raised: the session is being thrown away, and a
        failed QUIT must never turn into an error for a message that was already
        delivered.
        """
        if self.smtp.pid != os.getpid():
            self.abandon()  # another process's session: not a byte from here
            return None

        sock = self.smtp.sock
        try:
            if polite and sock is not None and self.state is not State.BROKEN:
                sock.settimeout(min(QUIT_TIMEOUT, sock.gettimeout() or QUIT_TIMEOUT))
                code, reply = self.smtp.quit()
                if code != 221:
                    return smtplib.SMTPResponseException(code, reply)
        except (smtplib.SMTPException, OSError) as exc:
            return exc
        finally:
            # Even when interrupted mid-QUIT, the socket must not be left open.
            with contextlib.suppress(OSError):
                self.smtp.close()
            self.state = State.BROKEN
        return None

    def abandon(self) -> None:
        """Let go of a session another process owns, without writing a byte.

        For a forked child: closing the descriptor only drops this process's
        reference; the parent's session goes on.
        """
        self.state = State.BROKEN
        self.smtp.abandon()


# How OpenSSL reports a TLS handshake answered with an SMTP greeting in clear text,
# depending on its version.
_PLAIN_TEXT_ANSWERS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
    }
)


def _connect(
    config: PoolConfig,
    context: ssl.SSLContext | None,
    *,
    plain: type[StagedSMTP] = StagedSMTP,
    tls: type[StagedSMTP_SSL] = StagedSMTP_SSL,
) -> StagedSMTP:
    """Open the TCP (or TLS) connection and read the greeting.

    smtplib closes the socket itself when this fails. The EHLO name is passed in so
    that smtplib does not look it up again for every session. ``smtppool check``
    passes subclasses of its own, which time each step.
    """
    hostname = config.local_hostname or default_local_hostname()
    if config.security == "ssl":
        try:
            smtp: StagedSMTP = tls(
                config.host,
                config.port,
                local_hostname=hostname,
                timeout=config.timeout,
                source_address=config.source_address,
                context=context,
            )
        except ssl.SSLError as exc:
            if exc.reason not in _PLAIN_TEXT_ANSWERS:
                raise
            raise ssl.SSLError(
                exc.errno,
                f"{config.address} answered the TLS handshake in plain text: this "
                "port does not speak TLS from the first byte; use "
                "security='starttls' (usually port 587), not 'ssl'",
            ) from exc
    else:
        try:
            smtp = plain(
                config.host,
                config.port,
                local_hostname=hostname,
                timeout=config.timeout,
                source_address=config.source_address,
            )
        except smtplib.SMTPServerDisconnected as exc:
            if not isinstance(exc.__context__, TimeoutError):
                raise
            # A server on an implicit-TLS port waits for our TLS handshake while
            # we wait for its greeting. Not worth a second try of the same wait.
            raise TimeoutError(
                f"no greeting within {config.timeout:g} s; if this port expects "
                "TLS from the first byte (usually 465), use security='ssl'"
            ) from None

    smtp.pipelining = config.pipelining
    smtp.chunking = config.chunking
    return smtp


def _handshake(
    smtp: StagedSMTP, config: PoolConfig, context: ssl.SSLContext | None
) -> None:
    """EHLO, STARTTLS and EHLO again, then AUTH once."""
    _greet(smtp)

    if config.security == "starttls":
        _starttls(smtp, config, context)
        # RFC 3207 section 4.2: forget what the server said before TLS and ask again.
        _greet(smtp)

    if config.username is not None:
        _login(smtp, config.username, config)


def _starttls(
    smtp: StagedSMTP, config: PoolConfig, context: ssl.SSLContext | None
) -> None:
    if not smtp.has_extn("starttls"):
        # Going on in clear text would send the password and the mail
        # unprotected (RFC 3207 section 4): stop, and say what to change.
        raise smtplib.SMTPNotSupportedError(
            f"{config.address} does not offer STARTTLS, and security="
            "'starttls' will not go on without it: use the server's TLS port "
            "(465, security='ssl'), or security='none' only for a relay you "
            "trust on a network you trust"
        )
    smtp.starttls(context=context)


def _login(smtp: StagedSMTP, username: str, config: PoolConfig) -> None:
    """AUTH with the password, or with a fresh OAuth2 token (XOAUTH2)."""
    if not smtp.has_extn("auth"):
        # Servers commonly offer AUTH only once the session is encrypted.
        after_tls = config.security == "none" and smtp.has_extn("starttls")
        raise smtplib.SMTPNotSupportedError(
            f"{config.address} does not offer AUTH"
            + (
                " before STARTTLS: use security='starttls'"
                if after_tls
                else ": leave out the username, or check the server's settings"
            )
        )

    provider = config.oauth_token
    if provider is None:
        password = config.password
        secret = _called(password, "password") if callable(password) else password
        _logged_in(smtp.login(username, _ascii(secret)))
        return

    # A token can expire between the provider's call and the server's check: a
    # refusal then gets one more try with a token asked for anew.
    for attempt in (1, 2):
        token = _ascii(_called(provider, "oauth_token"))
        if not token:
            raise ValueError("the oauth_token callable returned an empty token")
        initial = _xoauth2(username, token)
        try:
            _logged_in(
                smtp.auth(
                    "XOAUTH2",
                    lambda challenge=None, initial=initial: (
                        initial if challenge is None else ""
                    ),
                )
            )
        except smtplib.SMTPAuthenticationError as exc:
            if attempt == 2 or exc.smtp_code != 535:
                raise
        else:
            return


def _called(provider: Callable[[], str], name: str) -> str:
    """Call the caller's password or token callable, keeping its failures apart
    from the server's: a token service that cannot be reached must not read as
    a lost SMTP session, nor be tried again as one."""
    try:
        return provider()
    except Exception as exc:
        # Its message is left out: it may hold what the callable was fetching.
        raise CredentialsUnavailable(
            f"the {name} callable raised {type(exc).__name__}; see the cause"
        ) from exc


def _logged_in(reply: tuple[int, bytes]) -> None:
    """Refuse what smtplib lets through: it takes 503 (bad sequence) for "already
    logged in", which a session that has just opened cannot be."""
    code, text = reply
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, text)


def _xoauth2(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, which smtplib sends in base64."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"


def _ascii(secret: str | None) -> str:
    # smtplib encodes AUTH as ASCII and would fail with the secret in its error.
    if not isinstance(secret, str) or not secret.isascii():
        raise ValueError(
            "the password or token is not an ASCII string; smtplib cannot send it"
        )
    return secret


def _greet(smtp: StagedSMTP) -> None:
    """EHLO, falling back to HELO as smtplib does, but not after a 421.

    smtplib answers any failed EHLO with HELO, even a 421, after which the server
    is closing the channel (RFC 5321 section 3.8) and the session is of no use.
    """
    code, reply = smtp.ehlo()
    if code == 421:
        raise smtplib.SMTPHeloError(code, reply)
    if not 200 <= code < 300:
        code, reply = smtp.helo()
        if not 200 <= code < 300:
            raise smtplib.SMTPHeloError(code, reply)


def open_session(
    config: PoolConfig, now: float, pool_name: str, context: ssl.SSLContext | None
) -> Session:
    """Connect, secure and log in a new session, or raise and leave nothing open.

    ``context`` is the TLS context for any security but ``"none"``.
    """
    logger.debug("connect.started pool=%s address=%s", pool_name, config.address)
    try:
        smtp = _connect(config, context)
        try:
            _handshake(smtp, config, context)
        except BaseException:
            smtp.close()
            raise
    except BaseException as exc:
        logger.debug(
            "connect.failed pool=%s address=%s error=%s",
            pool_name,
            config.address,
            type(exc).__name__,
        )
        raise

    lifetime = math.inf if config.max_lifetime is None else config.max_lifetime
    jitter = 1.0 - random.uniform(0.0, LIFETIME_JITTER)  # noqa: S311 - not for secrets
    session = Session(
        smtp=smtp, created_at=now, expires_at=now + lifetime * jitter, last_used=now
    )
    logger.debug(
        "connect.complete pool=%s address=%s session=%d",
        pool_name,
        config.address,
        session.id,
    )
    return session
