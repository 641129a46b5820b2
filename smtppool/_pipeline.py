"""One mail transaction in as few round trips as the server allows.

smtplib's own ``sendmail`` waits for the reply to every command: one round trip for
MAIL, one per RCPT, one for DATA and one for the body. A server that offers
PIPELINING (RFC 2920) takes MAIL, every RCPT and DATA in one write and answers them
in order, and the body follows the 354: two round trips, whatever the number of
recipients. One that also offers CHUNKING (RFC 3030) can take the body in that same
write as ``BDAT <size> LAST``: one round trip. But then the whole message is on its
way before the server has said a word, so a session lost before the first reply
leaves the outcome unknown where the two-trip form could safely send it again;
that is why the pool uses it only when asked (``chunking=True``).

The errors raised, and the RSET or close that precede them, are those smtplib's
``sendmail`` gives for the same replies, so a caller cannot tell the paths apart.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import attrs

from ._stage import Stage

if TYPE_CHECKING:
    from _typeshed import SizedBuffer

    from ._smtp import StagedSMTP

Refused = dict[str, tuple[int, bytes]]

CRLF = b"\r\n"

# A line of the body that starts with a dot gets a second one, so that the server
# does not take it for the end of the data (RFC 5321 section 4.5.2).
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)

# A lone CR or LF in a message given as text becomes CRLF, as smtplib does.
_BARE_EOL = re.compile(r"\r\n|\r|\n")


# The most recipients sent in one pipelined group. The server answers each RCPT as
# it reads it while the client is still writing; past a few hundred replies those
# could fill both sides' socket buffers and leave each waiting on the other, the
# deadlock RFC 2920 warns of. Longer lists go one command at a time, as smtplib
# sends them.
MAX_PIPELINED_RECIPIENTS = 100


def can_pipeline(smtp: StagedSMTP, to_addrs: str | Sequence[str]) -> bool:
    """Tell whether this message may have its commands pipelined."""
    if isinstance(to_addrs, Sequence) and len(to_addrs) > MAX_PIPELINED_RECIPIENTS:
        return False
    return smtp.pipelining and bool(smtp.does_esmtp and smtp.has_extn("pipelining"))


def sendmail(
    smtp: StagedSMTP,
    from_addr: str,
    to_addrs: str | Sequence[str],
    msg: SizedBuffer | str,
    *,
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
) -> Refused:
    """Send one message with pipelined commands; return the refused recipients.

    Takes and returns what ``smtplib.SMTP.sendmail`` does, and raises the same
    errors for the same replies.
    """
    body = _as_bytes(msg)
    recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
    if not recipients:
        # smtplib says MAIL and RSET first; the outcome is the same without them.
        raise smtplib.SMTPRecipientsRefused({})
    chunked = smtp.chunking and bool(smtp.has_extn("chunking"))

    # Every line is built, and so checked, before any byte goes out: a bad address
    # raises with nothing written and the session still clean.
    commands = [_mail_command(smtp, from_addr, body, mail_options)]
    commands += [
        _command(smtp, "RCPT", f"TO:{smtplib.quoteaddr(rcpt)}", rcpt_options)
        for rcpt in recipients
    ]

    if chunked:
        _write_with_body(smtp, commands, body)
    else:
        smtp.stage = Stage.MAIL
        smtp.send(b"".join([*commands, b"DATA\r\n"]))

    mail, refused, closing = _read_envelope_replies(smtp, recipients)
    failure = _envelope_failure(mail, refused, recipients, from_addr)
    if failure is not None:
        _give_up(smtp, failure, closing=closing, in_data=not chunked)

    if not chunked:
        _send_data(smtp, body)
    return _check_final_reply(smtp, smtp.getreply(), refused)


def _write_with_body(smtp: StagedSMTP, commands: list[bytes], body: bytes) -> None:
    """MAIL, RCPT and ``BDAT <size> LAST`` with the body, all in one write. A
    refused envelope makes the server read the chunk and drop it (RFC 3030
    section 3)."""
    if not body.endswith(CRLF):
        # As smtplib's data() does, so that both paths deliver the same bytes.
        body += CRLF
    smtp.stage = Stage.BODY
    smtp.send(b"".join([*commands, b"BDAT %d LAST\r\n" % len(body), body]))


def _send_data(smtp: StagedSMTP, body: bytes) -> None:
    """Read the reply to the pipelined DATA, and send the body after a 354."""
    smtp.stage = Stage.DATA
    reply = smtp.getreply()
    if reply[0] != 354:
        # smtplib's data() raises here and leaves the transaction to the caller.
        raise smtplib.SMTPDataError(*reply)
    smtp.send(_dot_stuffed(body))


def _read_envelope_replies(
    smtp: StagedSMTP, recipients: list[str]
) -> tuple[tuple[int, bytes], Refused, bool]:
    """Read the replies to MAIL and every RCPT, in the order they were sent.

    Stops early after a 421: the server is closing the channel (RFC 5321 section
    3.8) and answers nothing more. Returns the MAIL reply, the refused recipients,
    and whether the session is ending.
    """
    mail = _read(smtp, Stage.MAIL)
    if mail[0] == 421:
        return mail, {}, True

    refused: Refused = {}
    for rcpt in recipients:
        try:
            reply = _read(smtp, Stage.RCPT)
        except OSError:
            if mail[0] == 250:
                raise
            # smtplib would have stopped at the refused MAIL and never sent what
            # is lost here, so the refusal is the outcome. (An Exim ACL "drop"
            # sends a 5xx and hangs up.)
            return mail, refused, True

        if reply[0] in (250, 251):
            if mail[0] == 250:
                smtp.accepted += (rcpt,)
        else:
            refused[rcpt] = reply
        if reply[0] == 421:
            return mail, refused, True
    return mail, refused, False


def _read(smtp: StagedSMTP, stage: Stage) -> tuple[int, bytes]:
    # Once the end of the message is written (CHUNKING), the stage only moves on.
    if smtp.stage.is_before_dot:
        smtp.stage = stage
    return smtp.getreply()


@attrs.frozen
class _Failure:
    error: smtplib.SMTPException
    # The command that failed, which is where smtplib would have stopped.
    stage: Stage


def _envelope_failure(
    mail: tuple[int, bytes],
    refused: Refused,
    recipients: list[str],
    from_addr: str,
) -> _Failure | None:
    """The error smtplib would raise for these MAIL and RCPT replies, if any."""
    if mail[0] != 250:
        error = smtplib.SMTPSenderRefused(mail[0], mail[1], from_addr)
        return _Failure(error, Stage.MAIL)
    if len(refused) == len(recipients) or any(
        code == 421 for code, _ in refused.values()
    ):
        return _Failure(smtplib.SMTPRecipientsRefused(refused), Stage.RCPT)
    return None


def _give_up(
    smtp: StagedSMTP, failure: _Failure, *, closing: bool, in_data: bool
) -> NoReturn:
    """Raise the envelope's refusal, leaving the session as smtplib's sendmail
    would after it: closed after a 421, else reset.

    The reply to DATA or BDAT is read first, to keep replies in step. smtplib
    would not have sent that command, so a session lost before its reply, or a
    421 to it, leaves the refusal standing and the session closed.
    """
    # Nothing that follows can deliver the message.
    smtp.stage = failure.stage
    reply = None
    if not closing:
        with contextlib.suppress(OSError):
            reply = smtp.getreply()

    if reply is None or reply[0] == 421:
        smtp.close()
    else:
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            if in_data and reply[0] == 354:
                # A server that accepted DATA with no transaction to go with it
                # waits for a body: end it empty so the replies stay in step
                # (RFC 2920 section 3.1). Nothing can be delivered.
                smtp.send(b".\r\n")
                smtp.getreply()
        _reset(smtp)
    raise failure.error


def _check_final_reply(
    smtp: StagedSMTP, reply: tuple[int, bytes], refused: Refused
) -> Refused:
    if reply[0] == 250:
        return refused

    if reply[0] == 421:
        smtp.close()
    else:
        _reset(smtp)
    raise smtplib.SMTPDataError(*reply)


def _reset(smtp: StagedSMTP) -> None:
    """RSET after a refusal. As in smtplib's sendmail, a session lost here is left
    for its next use to find: the refusal is what the caller needs to hear."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


def _mail_command(
    smtp: StagedSMTP, from_addr: str, body: bytes, mail_options: Sequence[str]
) -> bytes:
    options = list(mail_options)
    if smtp.has_extn("size"):
        options.insert(0, f"size={len(body)}")

    if any(option.lower() == "smtputf8" for option in options):
        if not smtp.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
        smtp.command_encoding = "utf-8"
    return _command(smtp, "MAIL", f"FROM:{smtplib.quoteaddr(from_addr)}", options)


def _command(
    smtp: StagedSMTP, verb: str, argument: str, options: Sequence[str]
) -> bytes:
    line = " ".join([verb, argument, *options])
    if "\r" in line or "\n" in line:
        # A line break would end this command early and start another.
        raise ValueError(f"{verb} command contains a line break: {line!r}")
    return line.encode(smtp.command_encoding) + CRLF


def _as_bytes(msg: SizedBuffer | str) -> bytes:
    if isinstance(msg, str):
        return _BARE_EOL.sub("\r\n", msg).encode("ascii")
    return bytes(msg)


def _dot_stuffed(body: bytes) -> bytes:
    """The body as DATA carries it: leading dots doubled, ending in CRLF.CRLF."""
    stuffed = _LEADING_DOT.sub(b"..", body)
    if not stuffed.endswith(CRLF):
        stuffed += CRLF
    return stuffed + b"." + CRLF
