"""How far a send got, which decides whether the server can have accepted it."""

from __future__ import annotations

import enum


class Stage(str, enum.Enum):
    """The last step a send reached before it finished or failed.

    Up to and including ``BODY`` the server cannot have accepted the message: it
    takes responsibility for it only when it answers the final dot with 250
    (RFC 5321 section 4.1.1.4), or the last BDAT chunk (RFC 3030). The body and
    its end go out in one write, so a write that fails leaves the end unsent.
    With CHUNKING the envelope goes in that write too, so its replies come after
    ``DOT_WRITTEN``.
    """

    CONNECT = "connect"  # opening the session: greeting, EHLO, STARTTLS, AUTH
    MAIL = "mail"  # MAIL FROM sent (or the RSET before it)
    RCPT = "rcpt"  # RCPT TO sent
    DATA = "data"  # DATA sent, waiting for 354
    BODY = "body"  # writing the message and its final dot (or BDAT LAST chunk)
    DOT_WRITTEN = "dot_written"  # the end written, waiting for a reply
    REPLIED = "replied"  # a reply after the end was written was read

    @property
    def is_before_dot(self) -> bool:
        """Tell whether the final dot can not yet have reached the server."""
        return self not in (Stage.DOT_WRITTEN, Stage.REPLIED)
