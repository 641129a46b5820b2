"""smtplib's client, taught to record how far each transaction got.

smtplib's ``sendmail`` and ``send_message`` stay in charge of the protocol; these
subclasses only watch the low-level calls they make. ``data()`` sends DATA, reads
the 354, writes the body with the final dot in one ``send()`` and reads the reply,
which is what tells the stages apart. That sequence is the same in every Python
version smtppool supports; ``tests/test_sending.py`` checks the stages it yields.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from typing import Any

from typing_extensions import Buffer

from ._stage import Stage


class StagedSMTP(smtplib.SMTP):
    """An ``smtplib.SMTP`` that keeps the stage and accepted recipients of the
    current transaction."""

    stage: Stage = Stage.CONNECT
    accepted: tuple[str, ...] = ()
    # Whether this transaction was ended by an RSET that the server answered with
    # 250: smtplib sends one itself after most refusals.
    is_reset: bool = False

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


class StagedSMTP_SSL(StagedSMTP, smtplib.SMTP_SSL):
    """The implicit-TLS counterpart of :class:`StagedSMTP`."""
