"""A local SMTP server for tests, built on aiosmtpd, that records what it receives
and can be told to fail the ways real servers do.

It subclasses aiosmtpd's ``SMTP`` protocol and reaches five of its internals: the
command table (to script replies), the idle timer callback (to choose how idle
sessions are dropped), the pre-STARTTLS transport, the stream it reads commands
from (to reset a session when the client next writes, to read BDAT chunks, and to
see whether a client sent a command before the reply to the one before) and the
flag that requires AUTH (set after construction, see ``_ScriptedSMTP``). The
``testing`` extra pins aiosmtpd to the 1.4 series those were checked against.
aiosmtpd reads commands one line at a time, so pipelined commands work as they
are; BDAT (RFC 3030) is added here.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import enum
import itertools
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr, Literal

import attrs
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session
from typing_extensions import Self

__all__ = [
    "IdleDrop",
    "ReceivedMessage",
    "SMTPTestServer",
    "SessionRecord",
]

# The name the server gives itself in its greeting and EHLO reply. Fixed, so that
# the server never looks up the machine's own name (tests replace that lookup).
SERVER_NAME = "smtppool.test"

# Postfix's line when it drops an idle session (RFC 5321 section 3.8, 4.4.2).
IDLE_REPLY = f"421 4.4.2 {SERVER_NAME} Error: timeout exceeded"


class _NotOurs(logging.Filter):
    """aiosmtpd warns on every login that it sets an attribute it has itself
    deprecated (``Session.login_data``); nothing a test could act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_NotOurs())

# Used when no idle timeout is asked for: long enough never to fire in a test.
_NO_IDLE_TIMEOUT = 3600.0

_GREETING = "CONNECT"
_END_OF_DATA = "."
_ANY = "*"


class IdleDrop(str, enum.Enum):
    """How the server ends a session that stayed idle for ``idle_timeout``."""

    SILENT = "silent"  # close the socket, say nothing (NATs and some providers)
    REPLY_421 = "421"  # write a 421 line first, then close (Postfix)
    RESET = "reset"  # abort with a TCP reset (load balancers)


@attrs.frozen
class ReceivedMessage:
    """One message the server accepted (answered 250 to its final dot)."""

    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None


@attrs.frozen
class SessionRecord:
    """What the server saw of one client session.

    ``commands`` holds the verbs the client sent, in order, upper case (``EHLO``,
    ``STARTTLS``, ``AUTH``, ``MAIL``, ...); never their arguments. ``replies``
    holds the code of each reply the server wrote, in order, greeting included.
    ``bytes_received`` counts what the server read from the client (after TLS
    decryption, where the session uses TLS). ``pipelined`` counts the commands
    that arrived before the server had answered the command in front of them
    (RFC 2920): a client must not do that unless the server offers PIPELINING.
    """

    id: int
    peer: tuple[Any, ...]
    started_at: float
    ended_at: float | None
    commands: tuple[str, ...]
    replies: tuple[int, ...]
    bytes_received: int
    tls: bool
    authenticated_as: str | None
    pipelined: int

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


@attrs.define(eq=False)
class _Rule:
    """A scripted answer to a command; see `SMTPTestServer.on`."""

    command: str
    reply: str | None
    delay: float
    hang: bool
    drop: bool
    reset: bool
    close: bool
    times: int | None
    after: int
    per_session: bool
    seen: dict[int | None, int] = attrs.field(factory=dict)
    used: int = 0

    @property
    def stops_reading(self) -> bool:
        """Tell whether the rule ends the session or never answers."""
        return self.drop or self.reset or self.hang

    def claims(self, command: str, session_id: int) -> bool:
        """Count this occurrence and tell whether the rule answers it."""
        if self.command not in (command, _ANY):
            return False

        key = session_id if self.per_session else None
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] <= self.after:
            return False
        if self.times is not None and self.used >= self.times:
            return False

        self.used += 1
        return True


@attrs.define(eq=False)
class _LiveSession:
    id: int
    peer: tuple[Any, ...]
    started_at: float
    ended_at: float | None = None
    commands: list[str] = attrs.field(factory=list)
    replies: list[int] = attrs.field(factory=list)
    bytes_received: int = 0
    tls: bool = False
    authenticated_as: str | None = None
    pipelined: int = 0

    def snapshot(self) -> SessionRecord:
        return SessionRecord(
            id=self.id,
            peer=self.peer,
            started_at=self.started_at,
            ended_at=self.ended_at,
            commands=tuple(self.commands),
            replies=tuple(self.replies),
            bytes_received=self.bytes_received,
            tls=self.tls,
            authenticated_as=self.authenticated_as,
            pipelined=self.pipelined,
        )


class SMTPTestServer:
    """An SMTP server on localhost, port 0, running in a thread of its own.

    Args:
        host: The address to listen on.
        idle_timeout: Seconds of client silence after which the server drops the
            session, or None never to drop it.
        idle_drop: How it drops an idle session (see `IdleDrop`).
        max_session_age: Seconds after which the server drops any session, busy
            or not, the way ``idle_drop`` says (some providers cap how long a
            session may last), or None for no limit.
        tls_context: A server-side context; offers STARTTLS when given.
        implicit_tls: Speak TLS from the first byte (as on port 465) instead.
        auth: A ``(username, password)`` pair the server accepts with AUTH PLAIN
            or LOGIN; AUTH is offered only over TLS when a context is given.
        require_auth: Refuse MAIL until the client has logged in.
        xoauth2: Offer AUTH XOAUTH2, as Gmail and Microsoft 365 do, and accept a
            ``(user, token)`` when this returns True. A refused token gets their
            answer: a 334 with an error, then 535 once the client has replied.
        pipelining: Offer PIPELINING (RFC 2920) in the EHLO reply, as real
            servers do.
        chunking: Offer CHUNKING (RFC 3030) and accept BDAT.

    Use it as a context manager, or call `start` and `stop`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        idle_timeout: float | None = None,
        idle_drop: IdleDrop | Literal["silent", "421", "reset"] = IdleDrop.SILENT,
        max_session_age: float | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        require_auth: bool = False,
        xoauth2: Callable[[str, str], bool] | None = None,
        pipelining: bool = True,
        chunking: bool = False,
    ) -> None:
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        if require_auth and auth is None:
            raise ValueError("require_auth needs auth=(username, password)")

        self.host = host
        self.port = 0
        self.idle_timeout = idle_timeout
        self.idle_drop = IdleDrop(idle_drop)
        self.max_session_age = max_session_age
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self._auth = auth
        self._require_auth = require_auth
        self._xoauth2 = xoauth2
        self.pipelining = pipelining
        self.chunking = chunking

        # Reentrant, so that a wait_until predicate may read the public properties.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._rules: list[_Rule] = []
        self._sessions: list[_LiveSession] = []
        self._messages: list[ReceivedMessage] = []
        self._open = 0
        self._peak = 0
        self._ids = itertools.count(1)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._protocols: set[_ScriptedSMTP] = set()

    def __repr__(self) -> str:
        return f"<SMTPTestServer {self.host}:{self.port}>"

    # Lifecycle

    def start(self) -> Self:
        """Bind a free port and start serving in a background thread."""
        if self._loop is not None:
            raise RuntimeError("the server is already running")

        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"smtp-test-server-{id(self):x}", daemon=True
        )
        self._thread.start()

        self._server = self._call(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close every session, stop listening and end the server's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Scripting

    def on(
        self,
        command: str,
        reply: str | None = None,
        *,
        delay: float = 0.0,
        hang: bool = False,
        drop: bool = False,
        reset: bool = False,
        close: bool = False,
        times: int | None = None,
        after: int = 0,
        per_session: bool = False,
    ) -> None:
        """Answer a command the scripted way instead of the normal one.

        Args:
            command: A verb (``"MAIL"``, ``"NOOP"``, ...), ``"CONNECT"`` for the
                greeting, ``"."`` for the reply to the end of DATA, or ``"*"``.
            reply: The reply line to send instead of the normal reply.
            delay: Seconds to wait before answering.
            hang: Never answer (until the server stops).
            drop: Close the connection instead of answering. At ``"."`` the
                message is still recorded: the server took it, the client never
                hears so.
            reset: Abort the connection with a TCP reset: instead of answering
                when no ``reply`` is given (at ``"."`` the message is recorded,
                as with ``drop``), or after writing ``reply`` as soon as the
                client sends anything more. ``on("DATA", "354 go ahead",
                reset=True)`` resets the session as the message body arrives.
            close: Close the connection after answering.
            times: Answer this way at most this many times; None for always.
            after: Let this many occurrences through normally first.
            per_session: Count ``after`` within each session, not server-wide.
        """
        rule = _Rule(
            command=command.upper(),
            reply=reply,
            delay=delay,
            hang=hang,
            drop=drop,
            reset=reset,
            close=close,
            times=times,
            after=after,
            per_session=per_session,
        )
        with self._lock:
            self._rules.append(rule)

    def stop_answering(self) -> None:
        """From now on, answer nothing at all, not even the greeting."""
        self.on(_ANY, hang=True)

    def drop_sessions(self) -> None:
        """Close every open client session now, without a word, as a restarting
        server or a NAT that forgot the connections would."""
        self._call(self._close_all())

    def clear_rules(self) -> None:
        """Go back to answering every command normally."""
        with self._lock:
            self._rules.clear()

    # What the server saw

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every message accepted so far, in order."""
        with self._lock:
            return list(self._messages)

    @property
    def sessions(self) -> list[SessionRecord]:
        """Every session so far, in the order they connected."""
        with self._lock:
            return [session.snapshot() for session in self._sessions]

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return self._open

    @property
    def peak_sessions(self) -> int:
        """The most sessions that were open at the same moment."""
        with self._lock:
            return self._peak

    def deliveries(self, message_id: str) -> int:
        """How many copies of the message with this Message-ID were accepted."""
        with self._lock:
            return sum(m.message_id == message_id for m in self._messages)

    def count(self, command: str) -> int:
        """How many times clients sent this verb, over every session."""
        command = command.upper()
        with self._lock:
            return sum(s.commands.count(command) for s in self._sessions)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true, re-checking it as the server records.

        Raises:
            TimeoutError: It was still false after ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError(f"{self!r}: condition not met after {timeout} s")

    def wait_for_sessions_closed(self, timeout: float = 5.0) -> None:
        """Wait until no client session is open."""
        self.wait_until(lambda: self._open == 0, timeout)

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` messages have been accepted."""
        self.wait_until(lambda: len(self._messages) >= count, timeout)

    # Inside the server's thread

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coroutine), self._loop)
        return future.result(timeout=10)

    async def _listen(self) -> asyncio.Server:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            self._protocol,
            host=self.host,
            port=0,
            ssl=self.tls_context if self.implicit_tls else None,
        )

    async def _close_all(self) -> None:
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        assert self._stopping is not None
        self._stopping.set()
        self._server.close()
        await self._close_all()
        await self._server.wait_closed()

        # A session's handler may still be waiting for a command the closed
        # connection will never bring (after STARTTLS aiosmtpd reads from a new
        # stream): end it here, not when the loop is closed with it pending.
        handlers = [
            task for task in asyncio.all_tasks() if task is not asyncio.current_task()
        ]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def _protocol(self) -> _ScriptedSMTP:
        starttls = self.tls_context if not self.implicit_tls else None
        return _ScriptedSMTP(
            self,
            _Recorder(self),
            hostname=SERVER_NAME,
            tls_context=starttls,
            timeout=self.idle_timeout or _NO_IDLE_TIMEOUT,
            authenticator=self._authenticate if self._auth else None,
            auth_exclude_mechanism=[] if self._xoauth2 else ["XOAUTH2"],
            require_auth=self._require_auth,
            # Over implicit TLS aiosmtpd does not know the session is encrypted.
            auth_require_tls=starttls is not None,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self._auth is not None
        username, password = self._auth
        success = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (username, password)
        if success and isinstance(smtp, _ScriptedSMTP):
            with self._changed:
                smtp.record.authenticated_as = username
                self._changed.notify_all()
        # handled=False: aiosmtpd itself then answers 235 or 535.
        return AuthResult(success=success, handled=False)

    def _authenticated(self, smtp: _ScriptedSMTP, user: str) -> None:
        with self._changed:
            smtp.record.authenticated_as = user
            self._changed.notify_all()

    def _session_started(self, protocol: _ScriptedSMTP, peer: Any) -> _LiveSession:
        with self._changed:
            record = _LiveSession(
                id=next(self._ids), peer=tuple(peer or ()), started_at=time.monotonic()
            )
            self._sessions.append(record)
            self._protocols.add(protocol)
            self._open += 1
            self._peak = max(self._peak, self._open)
            self._changed.notify_all()
        return record

    def _session_ended(self, protocol: _ScriptedSMTP) -> None:
        with self._changed:
            self._protocols.discard(protocol)
            if protocol.record.ended_at is None:
                protocol.record.ended_at = time.monotonic()
                self._open -= 1
            self._changed.notify_all()

    def _seen(self, record: _LiveSession, command: str) -> _Rule | None:
        """Record a command and return the rule that answers it, if any."""
        with self._changed:
            if command not in (_GREETING, _END_OF_DATA):
                record.commands.append(command)
                self._changed.notify_all()
            for rule in self._rules:
                if rule.claims(command, record.id):
                    return rule
        return None

    def _replied(self, record: _LiveSession, status: str | bytes) -> None:
        """Record the code of a reply once its last line is written."""
        line = (
            status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        )
        if line[3:4] == "-" or not line[:3].isdigit():
            return
        with self._changed:
            record.replies.append(int(line[:3]))
            self._changed.notify_all()

    def _pipelined(self, record: _LiveSession) -> None:
        with self._changed:
            record.pipelined += 1
            self._changed.notify_all()

    def _received(self, record: _LiveSession, count: int) -> None:
        with self._changed:
            record.bytes_received += count
            self._changed.notify_all()

    def _accepted(self, message: ReceivedMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _Recorder:
    """aiosmtpd handler: keeps each message the server accepts."""

    def __init__(self, server: SMTPTestServer) -> None:
        self._server = server
        self._headers = email.parser.BytesHeaderParser()

    async def auth_XOAUTH2(self, smtp: _ScriptedSMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2: ``user=<user>^Aauth=Bearer <token>^A^A``, in base64."""
        check = self._server._xoauth2
        assert check is not None  # the mechanism is offered only with a check
        if len(args) > 1:
            blob: bytes | object = base64.b64decode(args[1])
        else:
            blob = await smtp.challenge_auth("", encode_to_b64=False)
        fields = dict(
            part.split("=", 1)
            for part in (blob.decode() if isinstance(blob, bytes) else "").split("\x01")
            if "=" in part
        )
        user, token = (
            fields.get("user", ""),
            fields.get("auth", "").removeprefix("Bearer "),
        )
        if check(user, token):
            self._server._authenticated(smtp, user)
            return AuthResult(success=True, handled=False)

        # As Gmail: the error in a 334, then 535 once the client answers it.
        await smtp.challenge_auth('{"status":"401","schemes":"bearer"}')
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted",
        )

    async def handle_EHLO(
        self,
        smtp: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd leaves this to a handler that has the hook.
        session.host_name = hostname
        offered = [
            name
            for name, on in (
                ("PIPELINING", self._server.pipelining),
                ("CHUNKING", self._server.chunking),
            )
            if on
        ]
        return [*responses[:-1], *(f"250-{name}" for name in offered), responses[-1]]

    async def handle_DATA(
        self, smtp: _ScriptedSMTP, session: Session, envelope: Envelope
    ) -> str:
        rule = self._server._seen(smtp.record, _END_OF_DATA)
        reply = "250 2.0.0 OK" if rule is None or rule.reply is None else rule.reply
        lost = rule is not None and (rule.drop or rule.reset)
        if reply.startswith("2") or lost:
            # Kept before any delay, as a server commits a message to its queue
            # and only then replies: a client that gives up waiting is too late.
            self._keep(smtp, envelope)

        if rule is not None and (rule.delay or rule.hang):
            await smtp.pause(rule)

        # aiosmtpd then writes the returned reply to a transport already closing;
        # the client never reads it.
        if rule is not None and rule.reset:
            smtp.reset_connection()
        elif rule is not None and rule.drop:
            smtp.abort_connection()
        elif rule is not None and rule.close:
            # Runs once aiosmtpd has written the reply returned below.
            smtp.loop.call_soon(smtp.close_soon)
        return reply

    def _keep(self, smtp: _ScriptedSMTP, envelope: Envelope) -> None:
        content = envelope.original_content or b""
        headers = self._headers.parsebytes(content)
        self._server._accepted(
            ReceivedMessage(
                session_id=smtp.record.id,
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=content,
                message_id=headers.get("Message-ID"),
            )
        )


class _ScriptedSMTP(SMTP):
    """aiosmtpd's protocol, with a record per session and scripted answers."""

    def __init__(
        self,
        server: SMTPTestServer,
        handler: Any,
        *,
        require_auth: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        # Set here rather than passed in: aiosmtpd's constructor warns when AUTH is
        # required over plain text, which a localhost test server does on purpose,
        # and a test run that turns warnings into errors would lose the session.
        self._auth_required = require_auth
        self._owner = server
        self.record = _LiveSession(id=0, peer=(), started_at=0.0)
        self._greeted = False
        self._age_timer: asyncio.TimerHandle | None = None
        self._chunks: list[bytes] = []
        self._chunks_for: Envelope | None = None
        self._smtp_methods = {
            verb: self._scripted(verb, method)
            for verb, method in self._smtp_methods.items()
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # aiosmtpd calls this again on the same object after STARTTLS.
        upgraded = self._original_transport is not None
        if upgraded:
            self.record.tls = True
        else:
            peer = transport.get_extra_info("peername")
            self.record = self._owner._session_started(self, peer)
            self.record.tls = self._owner.implicit_tls
            if self._owner.max_session_age is not None:
                self._age_timer = self.loop.call_later(
                    self._owner.max_session_age, self._timeout_cb
                )
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._owner._received(self.record, len(data))
        super().data_received(data)

    def eof_received(self) -> bool | None:
        # aiosmtpd keeps a plain session half open after the client hangs up;
        # close it, as a real server does, so that the record shows the end.
        super().eof_received()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        # asyncio closes the socket only after this returns; record the end after
        # that, so a test that waits for it knows the client can see the close.
        self.loop.call_soon(self._owner._session_ended, self)
        if self._age_timer is not None:
            self._age_timer.cancel()
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        # The first line a session sends is the greeting (RFC 5321 section 3.1).
        if not self._greeted:
            self._greeted = True
            rule = self._owner._seen(self.record, _GREETING)
            if rule is not None:
                await self._answer(rule, lambda: self._write(status))
                return
        await self._write(status)

    async def _write(self, status: AnyStr) -> None:
        self._owner._replied(self.record, status)
        await super().push(status)

    def _scripted(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def run(arg: str | None) -> None:
            if self._reader._buffer and verb != "BDAT":  # type: ignore[attr-defined]
                # More had arrived before this command was answered.
                self._owner._pipelined(self.record)
            rule = self._owner._seen(self.record, verb)
            if rule is None:
                await method(arg)
                return

            size = _chunk_size(arg) if verb == "BDAT" else -1
            if size >= 0 and rule.reply is not None and not rule.stops_reading:
                # The chunk follows the command whatever the reply: read past it.
                await self._reader.readexactly(size)
            await self._answer(rule, lambda: method(arg))

        return run

    async def _answer(self, rule: _Rule, normal: Callable[[], Awaitable[None]]) -> None:
        await self.pause(rule)
        if rule.reset and rule.reply is None:
            self.reset_connection()
            return
        if rule.drop:
            self.abort_connection()
            return

        if rule.reply is None:
            await normal()
        else:
            await self._write(rule.reply)
        if rule.reset:
            # Whatever the client sends next arrives to find the session gone.
            await self._reader.read(1)
            self.reset_connection()
            # Stop aiosmtpd's loop from reading on into what is already buffered.
            self.transport = None
        elif rule.close:
            self.close_soon()
            # Nothing the client sent after this command is taken any more.
            self.transport = None

    async def smtp_BDAT(self, arg: str | None) -> None:
        """``BDAT <size> [LAST]`` (RFC 3030): the chunk is always read in full,
        so that its bytes are never taken for commands, then kept or refused."""
        words = (arg or "").split()
        last = len(words) == 2 and words[1].upper() == "LAST"
        if not self._owner.chunking:
            await self.push('500 Error: command "BDAT" not recognized')
            return
        if _chunk_size(arg) < 0 or (len(words) > 1 and not last):
            # The size is unknown, so the rest of the stream cannot be trusted.
            await self.push("501 Syntax: BDAT <size> [LAST]")
            self.close_soon()
            return

        chunk = await self._reader.readexactly(_chunk_size(arg))
        if await self.check_helo_needed() or await self.check_auth_needed("BDAT"):
            return
        assert self.envelope is not None
        if self.envelope.mail_from is None:
            await self.push("503 Error: need MAIL command")
            return
        if not self.envelope.rcpt_tos:
            await self.push("554 5.5.1 Error: no valid recipients")
            return

        self._chunks = [*self._chunks_of(self.envelope), chunk]
        self._chunks_for = self.envelope
        if not last:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return

        content = b"".join(self._chunks)
        self._chunks = []
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        await self.push("250 OK" if status is MISSING else status)
        self.envelope = self._create_envelope()

    async def smtp_DATA(self, arg: str) -> None:
        # RFC 3030 section 2: once a transaction has taken BDAT chunks, DATA
        # cannot finish it.
        if self.envelope is not None and self._chunks_of(self.envelope):
            await self.push("503 5.5.1 Error: BDAT in progress, DATA not allowed")
            return
        await super().smtp_DATA(arg)

    def _chunks_of(self, envelope: Envelope) -> list[bytes]:
        # Chunks belong to one transaction: RSET or a new MAIL starts afresh.
        return self._chunks if self._chunks_for is envelope else []

    async def pause(self, rule: _Rule) -> None:
        """Wait as the rule says: a delay, or until the server stops."""
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.hang:
            assert self._owner._stopping is not None
            await self._owner._stopping.wait()

    def close_soon(self) -> None:
        """Close after what was written so far has gone out."""
        if self.transport is not None:
            self.transport.close()

    def abort_connection(self) -> None:
        """Close at once, unflushed: the client sees end of file or a reset."""
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()

    def reset_connection(self) -> None:
        """Abort at once with a TCP reset."""
        transport = self._original_transport or self.transport
        if transport is not None:
            _reset(transport)

    def _timeout_cb(self) -> None:
        # Overrides aiosmtpd's idle timer callback, which always closes silently;
        # also the max_session_age timer's.
        transport = self.transport
        if transport is None:
            return

        if self._owner.idle_drop is IdleDrop.REPLY_421:
            assert isinstance(transport, asyncio.WriteTransport)
            self._owner._replied(self.record, IDLE_REPLY)
            transport.write(IDLE_REPLY.encode() + b"\r\n")
            transport.close()
        elif self._owner.idle_drop is IdleDrop.RESET:
            _reset(self._original_transport or transport)
        else:
            transport.close()


def _chunk_size(arg: str | None) -> int:
    """The size a BDAT command announces, or -1 if it announces none."""
    words = (arg or "").split()
    return int(words[0]) if words and words[0].isdigit() else -1


def _reset(transport: asyncio.BaseTransport) -> None:
    """Abort with a TCP RST: SO_LINGER on with a zero timeout, then close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()
