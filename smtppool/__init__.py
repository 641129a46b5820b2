"""A thread-safe, fork-aware pool of SMTP sessions for smtplib.

pool = smtppool.SMTPPool("smtp.example.com", username="app", password=secret)
pool.send_message(message)
"""

from ._config import PoolConfig, Security
from ._connection import Connection
from ._pool import SMTPPool
from ._stats import ClosedCounts, CloseReason, PoolStats
from .exceptions import PoolClosed, PoolTimeout, SMTPPoolError

__all__ = [
    "CloseReason",
    "ClosedCounts",
    "Connection",
    "PoolClosed",
    "PoolConfig",
    "PoolStats",
    "PoolTimeout",
    "SMTPPool",
    "SMTPPoolError",
    "Security",
]
