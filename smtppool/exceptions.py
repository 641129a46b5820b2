"""Errors raised by smtppool.

Every error is an :class:`SMTPPoolError`, which is an :class:`smtplib.SMTPException`,
so code that already catches smtplib's errors catches these too. The more specific
errors also inherit the builtin they resemble.
"""

from __future__ import annotations

import smtplib

__all__ = ["PoolClosed", "PoolTimeout", "SMTPPoolError"]


class SMTPPoolError(smtplib.SMTPException):
    """Base class of the errors smtppool raises itself."""


class PoolTimeout(SMTPPoolError, TimeoutError):
    """No connection became available within ``acquire_timeout``."""


class PoolClosed(SMTPPoolError):
    """The pool was closed; it hands out no more connections."""
