"""What a failed send means: lost before the server could accept the message,
refused, or unknown; and the error the caller gets for each."""

from __future__ import annotations

import email.message
import email.parser
import re
import smtplib
import socket

from ._stage import Stage
from .exceptions import (
    ConnectionFailed,
    DeliveryUnknown,
    PermanentDataError,
    PermanentRecipientsRefused,
    PermanentSenderRefused,
    SendError,
    TransientDataError,
    TransientRecipientsRefused,
    TransientSenderRefused,
)

# RFC 3463 status codes, which RFC 2034 puts at the start of the reply text.
_ENHANCED_STATUS = re.compile(rb"^\s*([245]\.\d{1,3}\.\d{1,3})(?!\S)")

# A disconnect, as smtplib reports it or as socket code it does not wrap raises it.
_LOST = (
    smtplib.SMTPServerDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


def is_lost(exc: BaseException) -> bool:
    """Tell whether an error means the session ended rather than a refusal.

    ``421`` is the server saying it is closing the channel, at whatever command
    (RFC 5321 section 3.8), so it counts as lost, not as a refusal of the message.
    """
    if isinstance(exc, _LOST):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return False


def may_resend(exc: BaseException, stage: Stage) -> bool:
    """Tell whether the session is lost and the server cannot have accepted the
    message: the final dot was not written, or the server answered it with 421."""
    if not is_lost(exc):
        return False
    return stage.is_before_dot or reply_of(exc) is not None


def is_unknown(exc: BaseException, stage: Stage) -> bool:
    """Tell whether the send failed after the final dot without a reply that says
    the message was refused: lost, timed out, or a reply smtplib could not read."""
    if not isinstance(exc, Exception) or may_resend(exc, stage):
        return False
    if stage is Stage.DOT_WRITTEN:
        return True
    reply = reply_of(exc)
    return stage is Stage.REPLIED and (reply is None or not 400 <= reply[0] < 600)


def naming_the_address(exc: BaseException, address: str) -> BaseException:
    """The same socket error, saying which server it was about.

    smtplib's own errors already say what the server replied, and TLS errors keep
    their details in attributes, so only plain ``OSError``s are rewritten; any
    other error comes back unchanged.
    """
    if not isinstance(exc, OSError) or type(exc) not in _PLAIN_OS_ERRORS:
        return exc

    detail = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is None:
        return type(exc)(f"{detail} (connecting to {address})")
    return type(exc)(exc.errno, f"{detail} (connecting to {address})")


# Errors from connecting a socket, which say nothing of where they connected.
_PLAIN_OS_ERRORS = (
    OSError,
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    TimeoutError,
    socket.gaierror,
    socket.herror,
)


def reply_of(exc: BaseException) -> tuple[int, bytes] | None:
    """The server reply an error carries, if any."""
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        return exc.smtp_code, text if isinstance(text, bytes) else text.encode()
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        replies = list(exc.recipients.values())
        transient = [reply for reply in replies if _is_transient(reply[0])]
        return (transient or replies)[0]
    return None


def describe(exc: BaseException) -> str:
    """A short name for an error in a log line: its reply code, or its type."""
    reply = reply_of(exc)
    return type(exc).__name__ if reply is None else str(reply[0])


def enhanced_status(text: bytes) -> str | None:
    """The RFC 3463 status code at the start of a reply's text, if there is one."""
    match = _ENHANCED_STATUS.match(text)
    return match.group(1).decode("ascii") if match else None


def message_id_of(msg: object) -> str | None:
    """The Message-ID header of a message object or of raw message text or bytes,
    or None. It is looked up while an error is being raised, so it never raises."""
    try:
        if isinstance(msg, email.message.Message):
            value = msg.get("Message-ID")
        elif isinstance(msg, bytes | bytearray | memoryview):
            # Only the header block is parsed: the body may be large.
            raw = bytes(msg).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
            value = email.parser.BytesHeaderParser().parsebytes(raw).get("Message-ID")
        elif isinstance(msg, str):
            text = msg.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
            value = email.parser.HeaderParser().parsestr(text).get("Message-ID")
        else:
            return None
    except Exception:
        return None
    return None if value is None else str(value).strip()


def refusal(exc: BaseException) -> SendError | None:
    """smtplib's error for a refused transaction, as the matching smtppool error."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and not exc.recipients:
        # smtplib's way of saying there was nobody to send to.
        return PermanentRecipientsRefused(exc.recipients)

    reply = reply_of(exc)
    if reply is None:
        return None
    transient = _is_transient(reply[0])

    error: SendError
    if isinstance(exc, smtplib.SMTPSenderRefused):
        kind = TransientSenderRefused if transient else PermanentSenderRefused
        error = kind(exc.smtp_code, exc.smtp_error, exc.sender)
    elif isinstance(exc, smtplib.SMTPDataError):
        data_kind = TransientDataError if transient else PermanentDataError
        error = data_kind(exc.smtp_code, exc.smtp_error)
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        rcpt_kind = (
            TransientRecipientsRefused if transient else PermanentRecipientsRefused
        )
        error = rcpt_kind(exc.recipients)
    else:
        return None

    error.reply_code, error.enhanced_status = reply[0], enhanced_status(reply[1])
    return error


def connection_failed(
    exc: BaseException, *, attempts: int, pool: str, address: str
) -> ConnectionFailed:
    """The error for a session lost on every attempt; ``exc`` is the last loss."""
    reply = reply_of(exc)
    why = type(exc).__name__
    if reply is not None:
        why = f"{reply[0]} {_first_line(reply[1])}"

    error = ConnectionFailed(
        f"pool {pool!r}: lost the session to {address} before the server accepted "
        f"the message, {attempts} time(s); last: {why}"
    )
    error.attempts = attempts
    if reply is not None:
        error.reply_code, error.enhanced_status = reply[0], enhanced_status(reply[1])
    return error


def delivery_unknown(
    exc: BaseException,
    *,
    message_id: str | None,
    recipients: tuple[str, ...],
    pool: str,
    address: str,
) -> DeliveryUnknown:
    """The error for a session lost after the final dot was written."""
    named = message_id or "the message (it has no Message-ID)"
    error = DeliveryUnknown(
        f"pool {pool!r}: no reply from {address} after the end of the message "
        f"({type(exc).__name__}); {named} may have been delivered, so it was not "
        "sent again"
    )
    error.recipients = recipients
    return error


def _is_transient(code: int) -> bool:
    return 400 <= code < 500


def _first_line(text: bytes) -> str:
    line = text.split(b"\n", 1)[0].decode("utf-8", "replace")
    return line[:120]
