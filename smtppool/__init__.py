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

# More specific errors are in smtppool.exceptions.
__all__ = [
    "CloseReason",
    "ClosedCounts",
    "Connection",
    "ConnectionFailed",
    "DeliveryUnknown",
    "PermanentError",
    "PoolClosed",
    "PoolConfig",
    "PoolStats",
    "PoolTimeout",
    "SMTPPool",
    "SMTPPoolError",
    "Security",
    "SendError",
    "Stage",
    "TransientError",
]
