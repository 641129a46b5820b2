"""Errors raised by smtppool.

Every error is an `SMTPPoolError`, which is an `smtplib.SMTPException`,
so code that already catches smtplib's errors catches these too. The more specific
errors also inherit the builtin or smtplib error they resemble.

A failed send raises a `SendError`, and which one says what to do next:

- `DeliveryUnknown`: the server may have the message. Do not resend blindly.
- `ConnectionFailed`: sessions kept breaking before the server could accept
  the message, even after the pool's own retries. Not delivered; try again later.
- `TransientError`: the server refused with a 4xx reply. Not delivered; try
  again later.
- `PermanentError`: the server refused with a 5xx reply. Not delivered;
  sending it again will fail the same way.

Only `DeliveryUnknown` means the message may have been delivered; after any
other error it was not.
"""

from __future__ import annotations

import smtplib
from typing import ClassVar

from ._stage import Stage

__all__ = [
    "ConnectionFailed",
    "CredentialsUnavailable",
    "DeliveryUnknown",
    "PermanentDataError",
    "PermanentError",
    "PermanentRecipientsRefused",
    "PermanentSenderRefused",
    "PoolClosed",
    "PoolTimeout",
    "SMTPPoolError",
    "SendError",
    "Stage",
    "TransientDataError",
    "TransientError",
    "TransientRecipientsRefused",
    "TransientSenderRefused",
]


class SMTPPoolError(smtplib.SMTPException):
    """Base class of the errors smtppool raises itself."""


class PoolTimeout(SMTPPoolError, TimeoutError):
    """No connection became available within ``acquire_timeout``."""


class PoolClosed(SMTPPoolError):
    """The pool was closed; it hands out no more connections."""


class CredentialsUnavailable(SMTPPoolError, RuntimeError):
    """The ``password`` or ``oauth_token`` callable raised, so no session could
    log in. Its own error is the ``__cause__``; the SMTP server is not at fault,
    and the pool does not try again by itself."""


class SendError(SMTPPoolError):
    """A message was not sent, or may not have been.

    Attributes:
        stage: How far the send got (`Stage`).
        message_id: The message's Message-ID header, if it has one.
        reply_code: The server's reply code, or None when it gave none (the
            connection was lost).
        enhanced_status: The RFC 3463 status code that began the reply text
            (``"5.1.1"``), or None.
        may_have_been_delivered: True only for `DeliveryUnknown`.
    """

    may_have_been_delivered: ClassVar[bool] = False

    stage: Stage = Stage.CONNECT
    message_id: str | None = None
    reply_code: int | None = None
    enhanced_status: str | None = None


class ConnectionFailed(SendError, smtplib.SMTPServerDisconnected, ConnectionError):
    """The session was lost before the server could accept the message, on every
    attempt the pool made.

    The message was not delivered. ``attempts`` says how many sessions were tried;
    the last failure is chained as ``__cause__``.
    """

    attempts: int = 1


class DeliveryUnknown(SendError):
    """The final dot was written but no reply came: the server may have the message.

    The pool never resends in this case. Check with the recipient or the provider
    using ``message_id`` before sending again. ``recipients`` lists the addresses
    the server had accepted with RCPT.

    It is deliberately not an ``SMTPServerDisconnected``: handlers that resend on a
    disconnect would deliver a second copy.
    """

    may_have_been_delivered: ClassVar[bool] = True

    recipients: tuple[str, ...] = ()


class TransientError(SendError):
    """The server refused with a 4xx reply: not delivered, try again later."""


class PermanentError(SendError):
    """The server refused with a 5xx reply: not delivered, do not retry as it is."""


# The errors actually raised for a refusal: each is one of the two kinds above and
# also smtplib's own error for the command that was refused, so existing handlers
# keep working.


class TransientSenderRefused(TransientError, smtplib.SMTPSenderRefused):
    """MAIL FROM was refused with a 4xx reply."""


class PermanentSenderRefused(PermanentError, smtplib.SMTPSenderRefused):
    """MAIL FROM was refused with a 5xx reply."""


class TransientRecipientsRefused(TransientError, smtplib.SMTPRecipientsRefused):
    """Every recipient was refused, at least one with a 4xx reply."""


class PermanentRecipientsRefused(PermanentError, smtplib.SMTPRecipientsRefused):
    """Every recipient was refused with a 5xx reply."""


class TransientDataError(TransientError, smtplib.SMTPDataError):
    """DATA or the message itself was refused with a 4xx reply."""


class PermanentDataError(PermanentError, smtplib.SMTPDataError):
    """DATA or the message itself was refused with a 5xx reply."""
