"""smtplib's client, taught to record how far each transaction got.

Against a server without PIPELINING, smtplib's ``sendmail`` stays in charge of the
protocol and these subclasses only watch the low-level calls it makes: ``data()``
sends DATA, reads the 354, writes the body with the final dot in one ``send()``
and reads the reply, which is what tells the stages apart. That sequence is the
same in every Python version smtppool supports. Where the server offers
PIPELINING, ``sendmail`` hands the transaction to ``_pipeline``, which sets the
stages itself. ``send_message`` is smtplib's in both cases and ends in
``sendmail``; ``tests/test_sending.py`` checks the stages against both kinds of
server.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import os
import re
import smtplib
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from typing_extensions import Buffer

from . import _pipeline
from ._stage import Stage

if TYPE_CHECKING:
    from _typeshed import SizedBuffer

# Every client object of this process and of the processes it was forked from, so
# that a forked child can let go of all it inherited, those still connecting too.
_everyone: weakref.WeakSet[StagedSMTP] = weakref.WeakSet()

# smtplib's buffered readers inherited in a forked child. They are kept and never
# closed: closing one takes its lock, which a thread of the parent may have held at
# the fork (reading a reply), and which nobody in the child would ever release.
_kept_from_parent: list[object] = []


class StagedSMTP(smtplib.SMTP):
    """An ``smtplib.SMTP`` that keeps the stage and accepted recipients of the
    current transaction, and the process that opened it."""

    stage: Stage = Stage.CONNECT
    accepted: tuple[str, ...] = ()
    # Whether this transaction was ended by an RSET that the server answered with
    # 250: smtplib sends one itself after most refusals.
    is_reset: bool = False
    # Whether to pipeline commands, and the body too, where the server offers it;
    # the session sets these from the pool's settings.
    pipelining: bool = True
    chunking: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pid = os.getpid()
        _everyone.add(self)
        super().__init__(*args, **kwargs)

    def abandon(self) -> None:
        """Close this process's descriptor of the socket, and nothing else.

        No QUIT, no ``shutdown()`` (which would end the connection for every
        process), no TLS ``unwrap()`` (which would send close_notify), and no lock
        taken (see ``_kept_from_parent``). Detaching an ``SSLSocket`` writes
        nothing.
        """
        file, self.file = self.file, None
        if file is not None:
            _kept_from_parent.append(file)

        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.detach())

    def begin(self) -> None:
        """Start recording a new transaction."""
        self.stage = Stage.MAIL
        self.accepted = ()
        self.is_reset = False

    def rset(self) -> tuple[int, bytes]:
        reply = super().rset()
        self.is_reset = reply[0] == 250
        return reply

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        # smtplib leaves the socket open if reading the greeting is interrupted (a
        # signal handler raising); the constructor that called this then never
        # returns an object anyone could close.
        try:
            return super().connect(host, port, source_address)
        except BaseException:
            self.close()
            raise

    def auth(
        self,
        mechanism: str,
        authobject: Any,
        *,
        initial_response_ok: bool = True,
    ) -> tuple[int, bytes]:
        # login() tries the next mechanism after any refusal, even a 421 after
        # which the server is closing the channel: end the handshake there.
        try:
            return super().auth(
                mechanism, authobject, initial_response_ok=initial_response_ok
            )
        except smtplib.SMTPAuthenticationError as exc:
            if exc.smtp_code == 421:
                raise smtplib.SMTPResponseException(421, exc.smtp_error) from exc
            raise

    def send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        check_headers(msg)
        return super().send_message(
            msg, from_addr, to_addrs, mail_options, rcpt_options
        )

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: SizedBuffer | str,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        # send_message() ends up here too.
        _check_addresses(from_addr, to_addrs)
        self.ehlo_or_helo_if_needed()
        if _pipeline.can_pipeline(self, to_addrs):
            return _pipeline.sendmail(
                self,
                from_addr,
                to_addrs,
                msg,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
            )
        return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        self.stage = Stage.MAIL
        return super().mail(sender, options)

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        self.stage = Stage.RCPT
        code, reply = super().rcpt(recip, options)
        if code in (250, 251):
            self.accepted += (recip,)
        return code, reply

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        self.stage = Stage.DATA
        return super().data(msg)

    def getreply(self) -> tuple[int, bytes]:
        reply = super().getreply()
        if self.stage is Stage.DATA and reply[0] == 354:
            self.stage = Stage.BODY
        elif self.stage is Stage.DOT_WRITTEN:
            self.stage = Stage.REPLIED
        return reply

    def send(self, s: Buffer | str) -> None:
        super().send(s)
        if self.stage is Stage.BODY:
            self.stage = Stage.DOT_WRITTEN


# What Python's email package may write as a line break when it serializes a
# header with the compat32 policy: CR and LF, and also the other characters that
# str.splitlines() splits at.
_BREAKS_BUT_CR = "\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_BREAKS = "\r" + _BREAKS_BUT_CR

# A line break that does not continue the header on the next line (RFC 5322
# section 2.2.3): anything after it would be read as a header of its own.
_HEADER_BREAK = re.compile(f"(?:\r\n|\r(?!\n)|[{_BREAKS_BUT_CR}])(?![ \t])")

# No address needs a control character but the tab a display name may hold, and
# a line break would end the command.
_UNSAFE_CHAR = re.compile(f"[\x00-\x08\x0a-\x1f\x7f{_BREAKS}]")
# local@domain with nothing that needs a closer look: quotes, brackets, a comma.
_PLAIN_ADDRESS = re.compile(r'[^\s"<>(),;:\\\[\]@]+@[^\s"<>(),;:\\\[\]@]+')
# An address as smtplib writes it in MAIL FROM or RCPT TO: one <...>, with spaces
# only inside a quoted local part. Anything after it would be read as a parameter.
_ONE_ADDRESS = re.compile(r'<(?:"(?:[^"\\]|\\.)*"|[^<>\s"])*>')


def check_headers(msg: email.message.Message) -> None:
    """Refuse a header whose value would start another header, in the message or
    any of its parts, before anything is written. Messages built with a modern
    policy refuse CR and LF themselves but not the other breaks; those built with
    ``compat32`` (``email.message.Message``) take any string, and
    ``email.header.Header`` objects are not checked by the email package at all."""
    for part in msg.walk():
        # Raw: the modern policy hides line breaks when a value is read, not when
        # it is written out (Flask-Mail's messages show it).
        for name, value in part.raw_items():
            if _HEADER_BREAK.search(name) or _HEADER_BREAK.search(str(value)):
                raise ValueError(
                    f"the {name.strip()!r} header contains a line break that "
                    "would start a header of its own; nothing was sent"
                )


def _check_addresses(from_addr: str, to_addrs: str | Sequence[str]) -> None:
    """Refuse an address that would not go out as the one address asked for,
    before anything is written.

    smtplib would not send a line break either: its address parser drops the
    break and what follows, so ``"a@example.com>\\r\\nRCPT TO:<b@example.com>"``
    would go out as ``<a@example.com>``, quietly not what was asked for. And a
    string it cannot parse but that starts with ``<`` goes out as it is, so
    ``"<> NOTIFY=NEVER"`` would add a parameter to the command.
    """
    recipients = [to_addrs] if isinstance(to_addrs, str) else to_addrs
    for role, address in [("sender", from_addr)] + [
        ("recipient", rcpt) for rcpt in recipients
    ]:
        if _UNSAFE_CHAR.search(address):
            raise ValueError(
                f"the {role} address {address!r} contains a line break or a "
                "control character, which would end or change the SMTP command; "
                "nothing was sent"
            )
        if _PLAIN_ADDRESS.fullmatch(address):
            continue  # nearly every address: none of the checks below can fail

        if not _ONE_ADDRESS.fullmatch(smtplib.quoteaddr(address)):
            raise ValueError(
                f"the {role} address {address!r} cannot be read as one address: "
                "what follows it would go out as part of the SMTP command; "
                "nothing was sent"
            )
        # A source route's hops (<@a,@b:user@c>, RFC 5321 section C) parse as
        # addresses of their own, starting with "@": they are not.
        found = [
            one
            for _, one in email.utils.getaddresses([address])
            if one and not one.startswith("@")
        ]
        if len(found) > 1:
            raise ValueError(
                f"the {role} address {address!r} holds more than one address, and "
                "smtplib would send to the first alone: pass a list of addresses; "
                "nothing was sent"
            )
        parsed = email.utils.parseaddr(address)[1]
        if parsed not in address:
            raise ValueError(
                f"the {role} address {address!r} would go out as {parsed!r}: "
                "smtplib drops the spaces between its parts; nothing was sent"
            )


class StagedSMTP_SSL(StagedSMTP, smtplib.SMTP_SSL):
    """The implicit-TLS counterpart of `StagedSMTP`."""


def let_go_of_inherited() -> int:
    """In a forked child: abandon every client object a parent opened; return how
    many there were.

    A socket that a thread of the parent had created but smtplib had not yet
    stored at the moment of the fork is not found: the child holds that copy, idle,
    until it exits.
    """
    pid = os.getpid()
    inherited = [smtp for smtp in list(_everyone) if smtp.pid != pid]
    for smtp in inherited:
        smtp.abandon()
        _everyone.discard(smtp)
    return len(inherited)
