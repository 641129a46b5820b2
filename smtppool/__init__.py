"""A thread-safe, fork-aware pool of SMTP sessions for smtplib.

pool = smtppool.SMTPPool("smtp.example.com", username="app", password=secret)
pool.send_message(message)
"""

from ._config import PoolConfig, Security
from ._connection import Connection
from ._pool import SMTPPool
from ._stage import Stage
from ._stats import ClosedCounts, CloseReason, PoolStats
from .exceptions import (
    ConnectionFailed,
    DeliveryUnknown,
    PermanentError,
    PoolClosed,
    PoolTimeout,
    SendError,
    SMTPPoolError,
    TransientError,
)

__all__ = [
    # The pool and what it lends
    "Connection",
    "PoolConfig",
    "SMTPPool",
    "Security",
    # What it reports
    "CloseReason",
    "ClosedCounts",
    "PoolStats",
    "Stage",
    # Errors (more specific ones are in smtppool.exceptions)
    "ConnectionFailed",
    "DeliveryUnknown",
    "PermanentError",
    "PoolClosed",
    "PoolTimeout",
    "SMTPPoolError",
    "SendError",
    "TransientError",
]
